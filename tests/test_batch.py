"""Dataset jobs (explainzoo.batch): maps, resume, errors, spec checks, inputs, CLI.

Small and fast: a random-init ResNet-18 at 64x64 on four scikit-image photos in
an ImageFolder layout plus one corrupt file; one job is run once per module and
read by several tests.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pyarrow")
pytest.importorskip("pandas")

from explainzoo.backbones import ExplainzooError, create_backbone  # noqa: E402
from explainzoo.backbones.images import load_image  # noqa: E402
from explainzoo.batch import collect, load_results, run_batch  # noqa: E402
from explainzoo.explainers import explain  # noqa: E402

BB, SIZE, METHODS = "timm:resnet18", 64, ["gradcam", "saliency"]
SETTINGS = dict(weights="random", image_size=SIZE, workers=0, batch_size=3, shard_rows=4)


def make_photos(root: Path, corrupt: bool = True) -> Path:
    from PIL import Image
    from skimage import data

    for rel, arr in {
        "cat/chelsea.jpg": data.chelsea(), "cat/astronaut.png": data.astronaut(),
        "cup/coffee.jpg": data.coffee(), "cup/rocket.jpg": data.rocket(),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).resize((96, 72)).save(root / rel)
    if corrupt:
        (root / "cup" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    return root


def reference_backbone():
    """The backbone as the job builds it: seeded random init, input resized to SIZE."""
    torch.manual_seed(0)
    bb = create_backbone(BB, pretrained=False)
    bb.preprocessing = dataclasses.replace(bb.preprocessing, input_size=(SIZE, SIZE))
    return bb


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def job(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "out"
    report = run_batch([str(photos)], [BB], METHODS, out, **SETTINGS)
    return out, report


def test_rows_one_per_image_backbone_method(job):
    out, report = job
    res = load_results(out)
    f = res.frame
    assert len(f) == 5 * len(METHODS) == report.rows
    assert not f.duplicated(["path", "backbone", "method"]).any()
    assert (out / "manifest.json").exists() and (out / "index.html").exists()
    m = res.manifest
    assert m["schema_version"] == 1 and m["counts"]["rows"] == 10 and m["finished"]
    assert {"torch", "timm"} <= set(m["versions"])
    ok = f[f["error"].isna()]
    assert set(ok["label"]) == {"cat", "cup"}  # ImageFolder labels
    # the raw map is stored at layer resolution (a 64 input -> 2x2 on layer4), saliency at input size
    g = ok[ok["method"] == "gradcam"].iloc[0]
    assert list(g["raw_shape"]) == [2, 2] and len(g["raw"]) == 2 * 2 * 2
    s = ok[ok["method"] == "saliency"].iloc[0]
    assert list(s["raw_shape"]) == [SIZE, SIZE]
    assert all(len(t) == 5 for t in ok["top5"]) and ok["probability"].between(0, 1).all()


def test_maps_equal_single_calls(job):
    out, _ = job
    res = load_results(out)
    bb = reference_backbone()
    ok = res.frame[res.frame["error"].isna()]
    for _, row in ok.iterrows():
        x = bb.preprocess(load_image(row["path"]))
        exp = explain(row["method"], bb, x)
        got = res.map(row)
        assert got.shape == (SIZE, SIZE) and got.dtype == np.float32
        assert np.abs(got - exp.maps[0].numpy()).max() <= 1e-3, (row["relpath"], row["method"])
        assert int(exp.targets[0]) == row["target"]
        assert abs(float(exp.scores[0]) - row["score"]) < 1e-3


def test_batch_composition_never_changes_a_result(job, photos, tmp_path):
    out, _ = job
    one = run_batch([str(photos)], [BB], METHODS, tmp_path / "b1", html=False,
                    **{**SETTINGS, "batch_size": 1})
    assert one.rows == 10
    a, b = load_results(out), load_results(tmp_path / "b1")
    fa = a.frame[a.frame["error"].isna()].set_index(["path", "method"]).sort_index()
    fb = b.frame[b.frame["error"].isna()].set_index(["path", "method"]).sort_index()
    assert list(fa.index) == list(fb.index)
    for key in fa.index:
        assert np.abs(a.map(fa.loc[key]) - b.map(fb.loc[key])).max() <= 1e-3
        assert fa.loc[key, "target"] == fb.loc[key, "target"]


def test_corrupt_files_become_error_rows(job):
    out, report = job
    f = load_results(out).frame
    bad = f[f["path"].str.endswith("broken.jpg")]
    assert len(bad) == len(METHODS) and bad["error"].notna().all()
    assert bad["error"].iloc[0].startswith("the image file is corrupt") or "not an image" in bad["error"].iloc[0]
    assert f[~f["path"].str.endswith("broken.jpg")]["error"].isna().all()
    assert report.images_failed == 1 and not report.all_failed
    assert load_results(out).errors().shape[0] == len(METHODS)


def test_changed_spec_is_refused_and_extend_adds(job, photos, tmp_path):
    out, _ = job
    with pytest.raises(ExplainzooError, match="different job.*explainers"):
        run_batch([str(photos)], [BB], ["gradcam"], out, **SETTINGS)
    with pytest.raises(ExplainzooError, match="different job.*target"):
        run_batch([str(photos)], [BB], METHODS, out, target=3, **SETTINGS)
    again = run_batch([str(photos)], [BB], METHODS, out, html=False, **SETTINGS)
    assert again.written == 0 and again.rows == 10  # nothing twice
    # extending a copy: one method more, the old rows stay
    import shutil

    copy = tmp_path / "ext"
    shutil.copytree(out, copy)
    ext = run_batch([str(photos)], [BB], [*METHODS, "xgradcam"], copy, extend=True, html=False, **SETTINGS)
    assert ext.written == 5 and ext.rows == 15


@pytest.mark.parametrize("case", ["missing", "empty", "backbone", "method", "layer", "grid", "option"])
def test_preflight_errors_before_any_work(case, photos, tmp_path):
    inputs, bbs, methods, extra = [str(photos)], [BB], ["gradcam"], {}
    if case == "missing":
        inputs = [str(tmp_path / "nope")]
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        inputs = [str(tmp_path / "empty")]
    elif case == "backbone":
        bbs = ["timm:resnet_nope"]
    elif case == "method":
        methods = ["gradcamm"]
    elif case == "layer":
        extra = {"layer": "layer9"}
    elif case == "grid":
        methods = ["filters"]
    elif case == "option":
        extra = {"options": {"steps": "3"}}
    out = tmp_path / "out"
    with pytest.raises(ExplainzooError) as info:
        run_batch(inputs, bbs, methods, out, **{**SETTINGS, **extra})
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_inputs_lists_globs_and_labels(photos, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,label\n{photos / 'cat/chelsea.jpg'},tabby\ncup/coffee.jpg,espresso\n")
    (tmp_path / "cup").mkdir()
    (photos / "cup/coffee.jpg").rename(tmp_path / "cup/coffee.jpg")
    try:
        items = collect([str(csv)])
        assert [i.label for i in items] == ["tabby", "espresso"]
        assert items[1].path == str((tmp_path / "cup/coffee.jpg").resolve())
        txt = tmp_path / "list.txt"
        txt.write_text(f"{photos / 'cat/chelsea.jpg'}\n")
        assert [i.relpath for i in collect([str(txt)])] == [str(photos / "cat/chelsea.jpg")]
        globbed = collect([str(photos / "cat" / "*.jpg")])
        assert [Path(i.path).name for i in globbed] == ["chelsea.jpg"]
        assert len(collect([str(photos)], limit=2)) == 2
    finally:
        (tmp_path / "cup/coffee.jpg").rename(photos / "cup/coffee.jpg")


def test_all_failed_exits_one_and_some_failed_zero(photos, tmp_path, capsys):
    from explainzoo.demo.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"junk")
    argv = ["-b", BB, "-m", "gradcam", "--random-init", "--image-size", str(SIZE), "-q",
            "--workers", "0"]
    assert main(["batch", str(bad), *argv, "-o", str(tmp_path / "o1")]) == 1
    assert main(["batch", str(photos), *argv, "-o", str(tmp_path / "o2")]) == 0
    assert "1 images failed" in capsys.readouterr().out
    assert main(["batch", str(tmp_path / "missing"), *argv, "-o", str(tmp_path / "o3")]) == 2


def _run_cli(photos: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "explainzoo.demo.cli", "batch", str(photos), "-b", BB, "-m", ",".join(METHODS),
           "--random-init", "--image-size", str(SIZE), "--batch-size", "1", "--shard-rows", "2",
           "--workers", "0", "-q", "--no-html", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_resume_after_sigkill_gives_every_row_once(tmp_path):
    photos = make_photos(tmp_path / "photos")
    for i in range(4):  # 9 images x 2 methods = 18 rows in shards of 2
        (photos / "cat" / f"copy{i}.jpg").write_bytes((photos / "cat/chelsea.jpg").read_bytes())
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    stop_after = int(rng.integers(1, 5))  # kill once this many shards exist
    proc = _run_cli(photos, out)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "results").glob("part-*.parquet"))) >= stop_after:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(load_results(out))
    assert 0 < partial < 18
    proc = _run_cli(photos, out)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    f = load_results(out).frame
    assert len(f) == 18 and not f.duplicated(["path", "backbone", "method"]).any()
    assert not list((out / "results").glob(".tmp-*"))


def test_cli_batch_is_registered():
    from explainzoo.demo.cli import build_parser

    args = build_parser().parse_args(["batch", "x", "-o", "y", "--batch-size", "auto"])
    assert args.batch_size == "auto" and callable(args.func)


def test_pointing_metric_and_random_trials(photos, tmp_path):
    """``pointing`` (with a box in image pixels) and the chance level over several random maps."""
    from explainzoo.explainers.metrics import pointing_game
    from explainzoo.explainers.metrics.evaluation import input_box_mask

    box = [10, 5, 80, 60]
    run_batch([str(photos)], [BB], ["gradcam"], tmp_path / "p", html=False, box=box, random_trials=2,
              metrics=["deletion", "pointing"], **SETTINGS)
    res = load_results(tmp_path / "p")
    ok = res.frame[res.frame["error"].isna()]
    assert ok["pointing"].isin([0.0, 1.0]).all() and ok["pointing_random"].isin([0.0, 0.5, 1.0]).all()
    assert ok["deletion_auc_random"].notna().all() and ok["insertion_auc"].isna().all()
    bb = reference_backbone()
    for _, row in ok.iterrows():
        image = load_image(row["path"])
        hit = pointing_game(torch.from_numpy(res.map(row)), mask=input_box_mask(bb, image, box))
        assert float(hit[0]) == row["pointing"]
    # a box outside an image: its pointing is null, not an error
    run_batch([str(photos)], [BB], ["gradcam"], tmp_path / "q", html=False, box=[500, 500, 600, 600],
              metrics=["pointing"], **SETTINGS)
    far = load_results(tmp_path / "q").frame
    assert far["pointing"].isna().all() and far["error"].notna().sum() == 1
    with pytest.raises(ExplainzooError, match="needs a box"):
        run_batch([str(photos)], [BB], ["gradcam"], tmp_path / "r", metrics=["pointing"], **SETTINGS)
    with pytest.raises(ExplainzooError, match="--box"):
        run_batch([str(photos)], [BB], ["gradcam"], tmp_path / "r", box=[3, 3, 1, 1], **SETTINGS)
    assert not (tmp_path / "r").exists()


def test_shards_and_manifests_of_an_older_writer_still_read_and_resume(job, tmp_path):
    """Columns and spec fields added later (pointing, box, random_trials) read as null / default."""
    import json
    import shutil

    import pyarrow.parquet as pq

    out, _ = job
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for shard in sorted((old / "results").glob("part-*.parquet")):
        t = pq.read_table(shard)
        pq.write_table(t.drop_columns(["pointing", "pointing_random"]), shard)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("box", "random_trials"):
        del manifest["spec"][key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    res = load_results(old)
    assert len(res) == 10 and res.frame["pointing"].isna().all()
    from explainzoo.batch.evaluation import read_rows

    assert len(read_rows(old)) == 10
    photos = Path(manifest["spec"]["inputs"][0])
    again = run_batch([str(photos)], [BB], METHODS, old, html=False, **SETTINGS)
    assert again.written == 0 and again.rows == 10


@pytest.mark.skipif(not hasattr(os, "nice"), reason="process priorities are POSIX")
def test_decode_workers_yield_the_cpu_to_the_model_on_cpu(photos, tmp_path, monkeypatch):
    # The DataLoader worker of a CPU job runs at a lower priority (so decoding
    # fills idle time rather than stalling the forward pass's threads); the
    # main process keeps its own.
    from explainzoo.batch import local

    original = local._init_worker
    seen = tmp_path / "worker.txt"

    def spy(worker_id: int, niceness: int = 0) -> None:
        original(worker_id, niceness)
        seen.write_text(f"{os.nice(0)} {torch.get_num_threads()}")

    base = os.nice(0)
    monkeypatch.setattr(local, "_init_worker", spy)
    settings = {**SETTINGS, "workers": 1}
    run_batch([str(photos)], [BB], ["gradcam"], tmp_path / "out", **settings)
    assert seen.read_text() == f"{min(19, base + local.WORKER_NICENESS)} 1"
    assert os.nice(0) == base
