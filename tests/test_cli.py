"""The explainzoo CLI, run as a user would (console script in the venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXE = shutil.which("explainzoo", path=str(Path(sys.executable).parent)) or "explainzoo"


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cat_png(tmp_path_factory, chelsea):
    p = tmp_path_factory.mktemp("img") / "cat.png"
    Image.fromarray(chelsea).save(p)
    return p


def test_list_and_layers():
    out = run("list", "backbones").stdout.split()
    assert "vgg11_ref" in out and "timm:tf_efficientnet_lite0" in out
    out = run("list", "explainers").stdout
    for name in ("filters", "activations", "saliency", "gradcam"):
        assert name in out
    out = run("layers", "vgg11_ref").stdout
    assert "last     backbone.bn5_2" in out and "512x14x14" in out


def test_explain_gradcam_pretrained(cat_png, tmp_path):
    out = tmp_path / "out.png"
    proc = run("explain", str(cat_png), "-b", "timm:tf_efficientnet_lite0", "-m", "gradcam", "-o", str(out))
    assert "offline package" in proc.stdout and "cat" in proc.stdout
    img = Image.open(out)
    assert img.size == (224, 224) and len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 100


def test_explain_filters_warns_random_init(cat_png, tmp_path):
    out = tmp_path / "filters.png"
    proc = run("explain", str(cat_png), "-b", "vgg11_ref", "-m", "filters", "-o", str(out))
    assert "RANDOM INIT" in proc.stderr
    assert Image.open(out).size[0] >= 256


def test_explain_errors_are_one_line_messages(cat_png, tmp_path):
    proc = run("explain", str(cat_png), "-b", "vgg11_ref", "-m", "gradcam", "-l", "last_cnv",
               "--random-init", "-o", str(tmp_path / "x.png"), ok=False)
    assert proc.returncode == 2
    assert "did you mean 'last'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("explain", str(tmp_path / "missing.png"), ok=False)
    assert proc.returncode == 2 and "cannot read image" in proc.stderr
    proc = run("explain", str(cat_png), "-m", "activations", "--opt", "order=sideways",
               "-o", str(tmp_path / "y.png"), ok=False)
    assert proc.returncode == 2 and "must be one of" in proc.stderr


def test_list_survives_a_plugin_that_calls_os_exit_at_import(tmp_path, monkeypatch, capsys):
    """Issue 11.10: `list explainers` probes third-party plugins in a child process."""
    import os

    from explainzoo.backbones.registry import PluginInfo
    from explainzoo.demo import cli
    from explainzoo.explainers import explainer_registry

    (tmp_path / "ez_cli_exiter.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    infos = dict(explainer_registry.infos())
    infos["exiter"] = PluginInfo("exiter", "ez_cli_exiter:Nothing", "thirdparty-exit", "0.3")
    explainer_registry.refresh()
    monkeypatch.setattr(explainer_registry, "_infos", infos)
    try:
        assert cli.main(["list", "explainers", "--verbose"]) == 0  # still alive: the child died, not us
        out = capsys.readouterr().out
        assert "BROKEN exiter (from thirdparty-exit)" in out and "exits with code 3" in out
        assert "gradcam" in out and "[explainzoo " in out  # the distribution and its version
    finally:
        explainer_registry.set_safe(False)
        monkeypatch.undo()
        explainer_registry.refresh()
