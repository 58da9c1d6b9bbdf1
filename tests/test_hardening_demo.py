"""Issue 11, the demo's side: a request's whole cost, deadlines, busy backbones,
cancellation, one image loader for the CLI, the hosted pixel cap, and Gradio's
routes closed on a public host."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from explainzoo.backbones import ExplainzooError
from explainzoo.backbones.registry import PluginInfo
from explainzoo.demo import budget, exposure
from explainzoo.demo.cli import main
from explainzoo.demo.service import DemoService, Limits
from explainzoo.explainers import CAMExplainer, explainer_class, explainer_registry
from explainzoo.explainers.base import Context
from explainzoo.explainers.deadline import BackboneBusy, Deadline, DeadlineExceeded, check_deadline
from explainzoo.explainers.metrics.evaluation import evaluate

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
CHELSEA = str(EXAMPLES / "chelsea.jpg")
LITE0 = "timm:tf_efficientnet_lite0"
# gradio's queue calls a pandas option that pandas 3 deprecates (not our code)
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*no_silent_downcasting:DeprecationWarning", "ignore:The copy keyword is deprecated:DeprecationWarning"
)


@pytest.fixture(scope="module")
def lite0() -> DemoService:
    return DemoService([LITE0], cache_size=1)


# --------------------------------------------------------------------------- items 1 + 2: whole cost


def test_gradient_methods_are_told_from_forward_only_ones_by_declaration():
    for name, grad in [
        ("smoothgrad", True),
        ("integrated_gradients", True),
        ("rise", False),
        ("occlusion", False),
        ("scorecam", False),
        ("gradcam", True),
    ]:
        assert budget.takes_gradients(explainer_class(name)) is grad, name


def test_backbone_profile_counts_flops_and_activations(lite0):
    p = lite0.load(LITE0).profile
    assert 0.7e9 < p.flops < 0.85e9  # EfficientNet-Lite0: ~0.39 G multiply-adds at 224
    assert 30e6 < p.activation_bytes < 100e6 and 0 < p.largest_bytes < p.activation_bytes
    assert 4e6 < p.parameters < 5e6


def test_a_request_over_the_work_budget_names_the_setting_to_lower(lite0):
    lb = lite0.load(LITE0)
    tight = Limits(max_request_gflops=20.0)  # ~8 SmoothGrad passes of Lite0 (0.77 GFLOPs, x3 with a backward)
    with pytest.raises(
        ExplainzooError,
        match=r"smoothgrad on .*lite0 needs ~17 passes with a backward "
        r"\(this demo's budget there: 8\): lower samples \(now 16\) to 7",
    ):
        budget.fit_budget(
            "smoothgrad", {"samples": 16, "batch_size": 8}, {"samples"}, lb.backbone, lb.profile, None, tight
        )
    # a default over budget is lowered to fit instead
    opts = {"samples": 16, "batch_size": 8}
    out = budget.fit_budget("smoothgrad", opts, (), lb.backbone, lb.profile, None, tight)
    assert out["samples"] == 7
    svc = DemoService([LITE0], limits=tight)
    with pytest.raises(ExplainzooError, match="lower samples"):
        svc.explain(CHELSEA, LITE0, "smoothgrad", options="samples=16")
    assert svc.explain(CHELSEA, LITE0, "smoothgrad").map.shape == (224, 224)


def test_scorecam_every_channel_counts_as_all_channels(lite0):
    lb = lite0.load(LITE0)
    with pytest.raises(ExplainzooError, match="no bound"):
        lite0.parse_options("scorecam", "max_channels=0")
    # past the per-option cap, max_channels=0 is still 1280 passes on Lite0's last layer
    with pytest.raises(ExplainzooError, match=r"needs ~1282 passes .* lower max_channels \(now 0\) to 998"):
        budget.fit_budget(
            "scorecam",
            {"max_channels": 0},
            {"max_channels"},
            lb.backbone,
            lb.profile,
            None,
            Limits(max_request_gflops=771.0),
        )


def test_a_chunk_over_the_memory_budget_names_the_batch_size(lite0):
    lb = lite0.load(LITE0)
    small = Limits(max_chunk_mb=200.0)  # Lite0 keeps ~51 MB of activations per image for a backward
    with pytest.raises(ExplainzooError, match=r"one chunk of 16 images .* lower batch_size \(now 16\) to 3"):
        budget.fit_budget(
            "smoothgrad", {"samples": 16, "batch_size": 16}, {"batch_size"}, lb.backbone, lb.profile, None, small
        )
    opts = {"samples": 16, "batch_size": 16}
    out = budget.fit_budget("smoothgrad", opts, (), lb.backbone, lb.profile, None, small)
    assert out["batch_size"] == 3


# --------------------------------------------------------------------------- item 4: deadlines, busy, cancel


STARTED, STOPPED = threading.Event(), threading.Event()
OUTCOME: dict[str, bool] = {}


class HungCAM(CAMExplainer):
    """A plugin that never finishes on its own (it only checks the deadline)."""

    description = "test: hangs"
    needs_gradient = False

    def combine(self, A, G, ctx: Context):
        STARTED.set()
        try:
            while True:
                check_deadline()
                time.sleep(0.01)
        except DeadlineExceeded as exc:
            OUTCOME["cancelled"] = exc.cancelled
            raise
        finally:
            STOPPED.set()


@pytest.fixture
def hung():
    infos = explainer_registry._scan()
    infos["hung_cam"] = PluginInfo("hung_cam", f"{__name__}:HungCAM", "explainzoo-demo-test")
    STARTED.clear()
    STOPPED.clear()
    OUTCOME.clear()
    try:
        yield "hung_cam"
    finally:
        explainer_registry.refresh()


def _run(fn, out: dict) -> threading.Thread:
    def target():
        try:
            out["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    return t


def test_a_hung_explainer_is_stopped_by_the_deadline_and_others_get_busy_then_succeed(hung):
    svc = DemoService([LITE0], limits=Limits(request_deadline_s=4.0, lock_timeout_s=0.5))
    svc.explain(CHELSEA, LITE0, "gradcam")  # warm
    first: dict = {}
    t0 = time.monotonic()
    t = _run(lambda: svc.explain(CHELSEA, LITE0, hung), first)
    assert STARTED.wait(30)
    with pytest.raises(BackboneBusy, match="busy with another request; try again"):
        svc.explain(CHELSEA, LITE0, "gradcam")
    t.join(30)
    assert isinstance(first.get("error"), DeadlineExceeded) and not first["error"].cancelled
    assert "4 s (deadline)" in str(first["error"]) and time.monotonic() - t0 < 15
    assert svc.explain(CHELSEA, LITE0, "gradcam").map.shape == (224, 224)  # the lock was released


def test_every_lock_wait_of_a_request_is_bounded_by_the_lock_timeout_evaluate_too():
    # Evaluate takes the backbone's lock inside the library (run_evaluation):
    # the request's Deadline carries lock_wait, so it answers busy after the
    # 0.5 s lock timeout, not after the 30 s deadline.
    svc = DemoService([LITE0], limits=Limits(request_deadline_s=30.0, lock_timeout_s=0.5))
    bb = svc._cache.get(LITE0).backbone
    taken, release = threading.Event(), threading.Event()

    def holder():
        with bb.lock:
            taken.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert taken.wait(10)
        pil = Image.open(CHELSEA).convert("RGB")

        def library_evaluation():  # the lock taken inside explainzoo.explainers.metrics
            with Deadline(30, lock_wait=0.5):
                evaluate([("chelsea", pil)], [bb], ["gradcam"], steps=2, sanity_steps=0, trials=1)

        for call in (
            library_evaluation,
            lambda: svc.evaluate(CHELSEA, [LITE0], ["gradcam"], 2, 0),
            lambda: svc.explain(CHELSEA, LITE0, "gradcam"),
        ):
            t0 = time.monotonic()
            with pytest.raises(BackboneBusy, match="busy with another request"):
                call()
            assert 0.4 < time.monotonic() - t0 < 5
    finally:
        release.set()
        t.join(10)


def test_a_cancelled_request_stops_and_releases_the_lock(hung):
    svc = DemoService([LITE0], limits=Limits(request_deadline_s=60.0))
    gone = threading.Event()
    svc.cancel_token = lambda: gone.is_set
    first: dict = {}
    t = _run(lambda: svc.explain(CHELSEA, LITE0, hung), first)
    assert STARTED.wait(30)
    t0 = time.monotonic()
    gone.set()
    t.join(10)
    assert isinstance(first.get("error"), DeadlineExceeded) and first["error"].cancelled
    assert time.monotonic() - t0 < 5
    svc.cancel_token = lambda: None
    assert svc.explain(CHELSEA, LITE0, "gradcam").map.shape == (224, 224)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_client_that_disconnects_has_its_request_cancelled(hung):
    # A real client in a child process, killed while its request runs: Gradio
    # sees the event stream close, the queue token fires, the library's next
    # deadline check stops the work (long before the 120 s deadline).
    from explainzoo.demo.app import build_demo, serve

    svc = DemoService([LITE0], limits=Limits(request_deadline_s=120.0))
    port = _free_port()
    demo = serve(
        build_demo(svc, concurrency_limit=2, landing=False),
        "127.0.0.1",
        port,
        prevent_thread_lock=True,
        quiet=True,
    )
    code = (
        "from gradio_client import Client, handle_file\n"
        f"c = Client('http://127.0.0.1:{port}/', verbose=False)\n"
        f"c.predict(handle_file({CHELSEA!r}), {LITE0!r}, {hung!r}, api_name='/explain')\n"
    )
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert STARTED.wait(90), "the request never started"
        t0 = time.monotonic()
        client.kill()
        client.wait(10)
        assert STOPPED.wait(30), "the work went on after its client left"
        assert OUTCOME == {"cancelled": True} and time.monotonic() - t0 < 30
    finally:
        client.kill()
        demo.close()


def test_limits_from_the_environment():
    lim = Limits.from_env({"EXPLAINZOO_DEADLINE_S": "5", "EXPLAINZOO_MAX_PIXELS": "1000000"})
    assert lim.request_deadline_s == 5.0 and lim.max_pixels == 1_000_000
    assert Limits.from_env({}).request_deadline_s == 60.0
    with pytest.raises(ExplainzooError, match="EXPLAINZOO_DEADLINE_S must be a number"):
        Limits.from_env({"EXPLAINZOO_DEADLINE_S": "soon"})
    with pytest.raises(ExplainzooError, match="request_deadline_s must be a number > 0"):
        Limits.from_env({"EXPLAINZOO_DEADLINE_S": "-1"})


def test_the_queue_token_fires_when_the_event_is_dead_or_gone():
    from gradio.context import LocalContext

    class Ev:
        _id, alive = "e1", True

    class Queue:
        active_jobs = [None, [Ev]]

    class Blocks:
        _queue = Queue()

    assert exposure.queue_cancel_token() is None  # not inside a Gradio event
    b, e = LocalContext.blocks.set(Blocks()), LocalContext.event_id.set("e1")
    try:
        token = exposure.queue_cancel_token()
        assert token is not None and token() is False
        Ev.alive = False  # the client's event stream closed
        assert token() is True
        Ev.alive, Queue.active_jobs = True, [None, None]  # /cancel: the job left the active set
        assert token() is True
    finally:
        LocalContext.blocks.reset(b)
        LocalContext.event_id.reset(e)


# --------------------------------------------------------------------------- item 6: the CLI's loader


def _png_bomb(side: int = 30_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1024))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_cli_refuses_a_bomb_in_one_line_with_exit_2(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_bomb())
    assert main(["explain", str(bomb), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bomb.png" in err and "too many pixels" in err
    # evaluate is a dataset job: a bad image is an error row, and a job where every image failed exits 1
    assert main(["evaluate", str(bomb), "-b", LITE0, "-m", "gradcam", "-o", str(tmp_path / "r"), "-q"]) == 1
    assert "1 images failed" in capsys.readouterr().err
    assert "too many pixels" in (tmp_path / "r" / "metrics.csv").read_text()


def test_cli_reads_16_bit_and_transparent_palette_images_right(tmp_path, capsys):
    from explainzoo.demo.cli import read_image

    grey = np.full((64, 64), 32768, dtype=np.uint16)  # mid-grey at 16 bits
    deep = tmp_path / "deep.png"
    Image.fromarray(grey).save(deep)
    assert abs(float(np.asarray(read_image(deep)).mean()) - 128) < 2  # not 99.6 % white
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 32, 64))
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)  # palette entry 0 (black) transparent
    glass = tmp_path / "glass.png"
    glass.write_bytes(buf.getvalue())
    arr = np.asarray(read_image(glass))
    assert tuple(arr[10, 10]) == (255, 0, 0) and tuple(arr[10, 50]) == (255, 255, 255)  # composited on white
    out = tmp_path / "deep-out.png"
    assert main(["explain", str(deep), "-o", str(out)]) == 0 and out.exists()
    capsys.readouterr()


# --------------------------------------------------------------------------- item 11: hosted pixel cap


def test_the_hosted_demo_has_its_own_pixel_cap(lite0, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (500, 400), (120, 30, 60)).save(big)
    svc = DemoService([LITE0], limits=Limits(max_pixels=100_000))
    with pytest.raises(ExplainzooError, match=r"0\.2 MP.*the limit is 0\.1 MP"):
        svc.explain(str(big), LITE0, "gradcam")
    assert lite0.explain(str(big), LITE0, "gradcam").map.shape == (224, 224)  # the default cap is 16 MP
    assert Limits().max_pixels == 16_000_000


# --------------------------------------------------------------------------- item 13: Gradio's routes


@pytest.fixture(scope="module")
def served(lite0):
    from explainzoo.demo.app import build_demo, serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    demo = build_demo(lite0, concurrency_limit=2, landing=False)
    serve(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}", demo
    finally:
        demo.close()


def test_monitoring_is_closed(served):
    base, _ = served
    paths = ("/monitoring", "/monitoring/summary", "/gradio_api/monitoring/summary", "/monitoring/x/dashboard")
    for path in paths:
        assert httpx.get(base + path).status_code == 404, path


def test_private_helper_events_cannot_be_called_by_fn_index(served):
    base, demo = served
    deps = demo.get_config_file()["dependencies"]
    helper = next(d for d in deps if d.get("api_visibility") == "private" and d["targets"][0][0] is not None)
    public = next(d for d in deps if d.get("api_visibility") == "public")
    join = base + "/gradio_api/queue/join"
    body = {"data": [LITE0], "fn_index": helper["id"], "session_hash": "s1", "event_data": None}
    r = httpx.post(join, json=body)
    assert r.status_code == 403 and "not part of the public API" in r.text
    assert httpx.post(join, json={**body, "trigger_id": 999_999}).status_code == 403
    ok = httpx.post(join, json={**body, "trigger_id": helper["targets"][0][0]})  # as the page sends it
    assert ok.status_code == 200 and "event_id" in ok.json()
    lock = exposure.lock_down(demo)  # idempotent: the same filter
    assert lock.refuse(b'{"fn_index": %d}' % public["id"]) is None


def test_config_shows_no_server_path_but_gradio_cache_files(served):
    base, _ = served
    text = httpx.get(base + "/config").text
    root = str(Path(__file__).resolve().parents[1])
    assert root not in text and "site-packages" not in text and str(Path.home()) + "/" not in text
