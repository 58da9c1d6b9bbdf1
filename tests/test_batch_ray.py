"""The Ray engine: the same rows as the local engine, on a local 2-CPU Ray."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")

from explainzoo.batch import load_results, run_batch  # noqa: E402

from .test_batch import BB, METHODS, SETTINGS, make_photos  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # conftest sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: every Ray server listens on loopback
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_rows_equal_local_rows(local_ray, tmp_path):
    photos = make_photos(tmp_path / "photos")
    settings = {**SETTINGS, "batch_size": 2}
    local = run_batch([str(photos)], [BB], METHODS, tmp_path / "local", html=False, **settings)
    remote = run_batch([str(photos)], [BB], METHODS, tmp_path / "ray", html=False, engine="ray", actors=2,
                       **settings)
    assert remote.rows == local.rows == 10 and remote.images_failed == 1
    a, b = load_results(tmp_path / "local"), load_results(tmp_path / "ray")
    fa = a.frame.set_index(["path", "method"]).sort_index()
    fb = b.frame.set_index(["path", "method"]).sort_index()
    assert list(fa.index) == list(fb.index)
    assert b.manifest["runs"][-1]["engine"] == "ray"
    for key in fa.index:
        ra, rb = fa.loc[key], fb.loc[key]
        assert (ra["error"] is None) == (rb["error"] is None)
        if ra["error"] is not None:
            continue
        assert ra["target"] == rb["target"] and list(ra["top5"]) == list(rb["top5"])
        assert abs(ra["probability"] - rb["probability"]) < 1e-4
        assert np.abs(a.map(ra) - b.map(rb)).max() <= 1e-3
    # resume on Ray: nothing twice
    again = run_batch([str(photos)], [BB], METHODS, tmp_path / "ray", html=False, engine="ray", actors=2,
                      **settings)
    assert again.written == 0 and again.rows == 10
