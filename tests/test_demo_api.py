"""The Gradio app served on a free localhost port and driven through its API.

Launched in-process (``prevent_thread_lock=True``) with the same settings as
``explainzoo demo`` (:func:`explainzoo.demo.app.serve`), then called with
``gradio_client`` like any remote user would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from explainzoo.backbones.images import MAX_FILE_BYTES  # noqa: E402
from explainzoo.demo.app import build_demo, serve  # noqa: E402
from explainzoo.demo.service import DemoService  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
CHELSEA = str(EXAMPLES / "chelsea.jpg")
COFFEE = str(EXAMPLES / "coffee.jpg")
BACKBONES = ["timm:tf_efficientnet_lite0", "vgg11_ref", "timm:resnet18"]
# gradio's queue calls a pandas option that pandas 3 deprecates (not our code)
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*no_silent_downcasting:DeprecationWarning", "ignore:The copy keyword is deprecated:DeprecationWarning"
)
ENDPOINTS = {"/explain", "/compare_backbones", "/compare_explainers", "/evaluate", "/filters", "/activations"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[str, Any]]:
    service = DemoService(BACKBONES, cache_size=3)
    demo = build_demo(service, concurrency_limit=4)
    port = _free_port()
    serve(demo, "127.0.0.1", port, queue_size=64, concurrency_limit=4, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app, tmp_path_factory) -> Client:
    # each client downloads into its own folder: gradio_client names downloads by a
    # content hash, and concurrent clients sharing a folder can read a half-written file
    return Client(app[0], verbose=False, download_files=str(tmp_path_factory.mktemp("client")))


def _array(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _assert_real_image(path: str, min_side: int = 64) -> np.ndarray:
    arr = _array(path)
    assert min(arr.shape[:2]) >= min_side, arr.shape
    assert arr.std() > 5, "a blank image came back"
    return arr


def _explain(client: Client, image: str, backbone: str = BACKBONES[0], **kw: Any) -> tuple:
    args = {
        "layer": "default",
        "target": "top-1",
        "cmap": "jet",
        "alpha": 0.5,
        "options": "",
        **kw,
    }
    return client.predict(
        handle_file(image),
        backbone,
        "gradcam",
        args["layer"],
        args["target"],
        args["cmap"],
        args["alpha"],
        args["options"],
        api_name="/explain",
    )


def test_only_the_six_tab_endpoints_are_public(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert named == ENDPOINTS


def test_public_hosting_settings(app):
    url, demo = app
    assert demo.max_file_size == MAX_FILE_BYTES
    assert not demo.share and demo.allowed_paths == []
    assert demo._queue.max_size == 64
    big = b"\x00" * (MAX_FILE_BYTES + 1024)
    r = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=60)
    assert r.status_code == 413, r.text[:200]


def test_server_files_cannot_be_smuggled_in_as_inputs(app):
    url, _ = app
    payload = {
        "data": [
            {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
            BACKBONES[0],
            "gradcam",
            "default",
            "top-1",
            "jet",
            0.5,
            "",
        ]
    }
    r = httpx.post(f"{url}gradio_api/call/explain", json=payload, timeout=30)
    assert r.status_code == 200, r.text
    event = r.json()["event_id"]
    text = httpx.get(f"{url}gradio_api/call/explain/{event}", timeout=120).text
    assert "event: error" in text and "root:" not in text


def test_explain_endpoint(client):
    overlay, raw, top5, info, target_update = _explain(client, CHELSEA)
    arr = _assert_real_image(overlay, 224)
    assert arr.shape == (224, 224, 3)
    _assert_real_image(raw, 224)
    assert len(top5["confidences"]) == 5 and "cat" in top5["label"]
    assert "bn2" in info and "offline package" in info and " ms" in info
    assert any(v == "281" for _, v in target_update["choices"])
    # any class by name, a module path, a colormap
    overlay2, _, _, info2, _ = _explain(client, COFFEE, target="espresso", layer="blocks.5", cmap="viridis")
    assert "espresso" in info2 and "`blocks.5`" in info2
    _assert_real_image(overlay2, 224)


def test_explain_shows_random_init_warning(client):
    _, _, _, info, _ = _explain(client, CHELSEA, backbone="vgg11_ref")
    assert "RANDOM INIT" in info and "random init" in info


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"backbone": "timm:resnet50"}, "not in the list of choices|this demo offers"),
        ({"layer": "../../etc/passwd"}, "unknown layer"),
        ({"target": "definitely not a class"}, "unknown class"),
        ({"options": "steps=1000000"}, "unknown option"),
    ],
)
def test_explain_errors_are_messages(client, kw, match):
    with pytest.raises(AppError, match=match) as err:
        _explain(client, CHELSEA, **kw)
    assert "Traceback" not in str(err.value)


def test_corrupt_upload_is_a_message(client, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("not an image at all\n" * 50)
    with pytest.raises(AppError, match="not an image in a supported format"):
        _explain(client, str(fake))


def test_compare_backbones_endpoint(client):
    gallery, notes = client.predict(
        handle_file(CHELSEA), "gradcam", BACKBONES, "last", "jet", 0.5, False, api_name="/compare_backbones"
    )
    assert len(gallery) == 3
    for item, name in zip(gallery, BACKBONES, strict=True):
        _assert_real_image(item["image"], 224)
        assert name.split(":")[-1] in item["caption"] and "layer" in item["caption"]
    assert "RANDOM INIT" in notes
    with pytest.raises(AppError, match="at most 4"):
        client.predict(
            handle_file(CHELSEA),
            "gradcam",
            BACKBONES * 2,
            "last",
            "jet",
            0.5,
            False,
            api_name="/compare_backbones",
        )


def test_compare_explainers_endpoint(client):
    gallery, notes = client.predict(
        handle_file(CHELSEA),
        BACKBONES[0],
        ["gradcam", "saliency"],
        "default",
        "jet",
        0.5,
        False,
        api_name="/compare_explainers",
    )
    assert [g["caption"].split(" |")[0] for g in gallery] == ["gradcam", "saliency"]
    for g in gallery:
        _assert_real_image(g["image"], 224)
        assert "deletion AUC" not in g["caption"]


def test_evaluate_endpoint(client):
    table, curves, notes = client.predict(
        handle_file(COFFEE), [BACKBONES[0]], ["gradcam"], 2, 0, api_name="/evaluate"
    )
    headers = table["headers"]
    assert headers[:4] == ["backbone", "explainer", "deletion AUC ↓", "insertion AUC ↑"]
    rows = [dict(zip(headers, row, strict=True)) for row in table["data"]]
    assert [r["explainer"] for r in rows] == ["gradcam", "random"]
    for r in rows:
        assert r["backbone"] == BACKBONES[0] and not r["error"]
        assert 0.0 <= float(r["deletion AUC ↓"]) <= 1.0 and 0.0 <= float(r["insertion AUC ↑"]) <= 1.0
    arr = _assert_real_image(curves, 200)
    assert arr.shape[1] > arr.shape[0]  # two panels side by side
    assert "2 deletion / insertion steps" in notes and "no sanity check" in notes
    with pytest.raises(AppError, match="steps must be between 1 and 64|greater than maximum value 64"):
        client.predict(handle_file(COFFEE), [BACKBONES[0]], ["gradcam"], 1000, 0, api_name="/evaluate")
    with pytest.raises(AppError, match="at most 6 backbone x explainer pairs"):
        client.predict(
            handle_file(COFFEE), BACKBONES, ["gradcam", "saliency", "layercam"], 2, 0, api_name="/evaluate"
        )


def test_filters_endpoint(client):
    image, caption = client.predict(BACKBONES[0], "conv1", api_name="/filters")
    arr = _assert_real_image(image, 256)
    assert arr.shape[0] == arr.shape[1] and "32 kernels of conv_stem" in caption
    with pytest.raises(AppError, match="not a convolution layer"):
        client.predict(BACKBONES[0], "bn2", api_name="/filters")


def test_activations_endpoint(client):
    image, caption = client.predict(
        handle_file(CHELSEA), BACKBONES[0], "stage2", 16, "viridis", api_name="/activations"
    )
    _assert_real_image(image, 256)
    assert "16 of 24 channels of blocks.1" in caption
    with pytest.raises(AppError, match="between 1 and 256|greater than maximum value 256"):
        client.predict(handle_file(CHELSEA), BACKBONES[0], "conv1", 100000, "viridis", api_name="/activations")


def test_eight_concurrent_clients_get_the_sequential_maps(app, client, tmp_path):
    url, _ = app
    sequential = {name: _array(_explain(client, CHELSEA, backbone=name)[0]) for name in BACKBONES}
    results: list[tuple[str, np.ndarray]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def user(i: int) -> None:
        try:
            own = Client(url, verbose=False, download_files=str(tmp_path / f"user{i}"))
            barrier.wait(timeout=60)
            jobs = [
                own.submit(
                    handle_file(CHELSEA), name, "gradcam", "default", "top-1", "jet", 0.5, "", api_name="/explain"
                )
                for name in BACKBONES[i % 3 :] + BACKBONES[: i % 3]
            ]
            order = BACKBONES[i % 3 :] + BACKBONES[: i % 3]
            for name, job in zip(order, jobs, strict=True):
                results.append((name, _array(job.result(timeout=300)[0])))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert len(results) == 24
    for name, arr in results:
        diff = np.abs(arr.astype(int) - sequential[name].astype(int))
        assert diff.max() <= 1, (name, diff.max())


def test_launch_serves_the_page_and_reports_a_busy_port():
    from explainzoo.backbones import ExplainzooError
    from explainzoo.demo.app import launch

    port = _free_port()
    demo = launch("127.0.0.1", port, "timm:tf_efficientnet_lite0", prevent_thread_lock=True)
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        with pytest.raises(ExplainzooError, match="pick another --port"):
            launch("127.0.0.1", port, "timm:tf_efficientnet_lite0", prevent_thread_lock=True)
    finally:
        demo.close()


def test_result_pngs_go_to_a_private_folder_not_a_planted_link(tmp_path, monkeypatch):
    """A symlink planted at the old predictable /tmp/explainzoo-demo-<uid> is never followed."""
    import os
    import stat
    import tempfile

    import explainzoo.demo.files as files

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(files, "_output_dir", None)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.png").write_bytes(b"not yours")
    os.utime(victim / "precious.png", (0, 0))  # old enough for the hourly clean-up
    (tmp_path / f"explainzoo-demo-{os.getuid()}").symlink_to(victim, target_is_directory=True)
    path = Path(files.png_file(Image.new("RGB", (8, 8), (200, 10, 10))))
    folder = path.parent
    assert path.is_file() and not folder.is_symlink() and folder.resolve() != victim.resolve()
    assert folder.parent == tmp_path and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in victim.iterdir()) == ["precious.png"]
    assert files.png_file(Image.new("RGB", (8, 8), (200, 10, 10))) == str(path)  # written once
