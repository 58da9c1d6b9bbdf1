"""Entry-point registries: lazy, cached, isolated from broken plugins.

One test builds a throwaway plugin distribution, pip-installs it into this
venv and uninstalls it afterwards.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explainzoo.backbones import PluginLoadError, UnknownNameError
from explainzoo.backbones.registry import Registry
from explainzoo.explainers import create_explainer, explainer_registry, list_explainers

PLUGIN = "explainzoo_testplugin"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{PLUGIN}"
version = "0.0.1"

[tool.setuptools]
py-modules = ["{PLUGIN}", "{PLUGIN}_broken", "{PLUGIN}_exit"]

[project.entry-points."explainzoo.explainers"]
centre_cam = "{PLUGIN}:CentreCAM"
broken_import = "{PLUGIN}_broken:Nothing"
broken_exit = "{PLUGIN}_exit:Nothing"
wrong_type = "{PLUGIN}:not_a_class"
gradcam = "{PLUGIN}:CentreCAM"

[project.entry-points."explainzoo.backbones"]
tiny_plugin_net = "{PLUGIN}:create_tiny"
"""

MODULE = '''
import torch
from torch import nn
from explainzoo.backbones import Backbone, Preprocessing
from explainzoo.explainers import CAMExplainer

not_a_class = 42


class CentreCAM(CAMExplainer):
    """A plugin CAM: the activation energy of the layer (for the test)."""

    description = "plugin test: activation energy"
    paper = "none"
    needs_gradient = False

    def combine(self, A, G, ctx):
        return A.pow(2).sum(1)


def create_tiny(pretrained=False, checkpoint=None):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    return Backbone("tiny_plugin_net", model, Preprocessing(input_size=(16, 16)), ["a", "b", "c"],
                    aliases={"conv1": "0", "last": "1"})
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("plugin")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / f"{PLUGIN}.py").write_text(MODULE)
    (root / f"{PLUGIN}_broken.py").write_text("import no_such_module_anywhere\n")
    (root / f"{PLUGIN}_exit.py").write_text("raise SystemExit('plugin called exit at import')\n")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(root)], check=True)
    importlib.invalidate_caches()
    explainer_registry.refresh()
    from explainzoo.backbones import backbone_registry

    backbone_registry.refresh()
    try:
        yield root
    finally:
        subprocess.run([*pip, "uninstall", "-y", PLUGIN], check=True)
        importlib.invalidate_caches()
        explainer_registry.refresh()
        backbone_registry.refresh()


def test_plugin_listed_working_and_broken_ones_reported(installed_plugin):
    names = list_explainers()
    assert {"centre_cam", "broken_import", "broken_exit", "wrong_type"} <= set(names)
    assert PLUGIN not in sys.modules, "listing must not import plugin code"

    from explainzoo.backbones import create_backbone

    bb = create_backbone("tiny_plugin_net")
    exp = create_explainer("centre_cam").explain(bb, torch.randn(2, 3, 16, 16))
    assert exp.maps.shape == (2, 16, 16) and exp.method == "centre_cam"
    for broken, why in [
        ("broken_import", "ModuleNotFoundError"),
        ("broken_exit", "SystemExit"),
        ("wrong_type", "must be an Explainer subclass"),
    ]:
        with pytest.raises(PluginLoadError) as e:
            create_explainer(broken)
        assert broken in str(e.value) and PLUGIN in str(e.value) and why in str(e.value)
        assert "Traceback" in str(e.value)
    # a broken plugin never takes the others down; built-ins win the clash
    assert type(create_explainer("gradcam")).__module__ == "explainzoo.explainers.cam"
    assert any(info.dist == PLUGIN for info in explainer_registry.shadowed())

    out = subprocess.run(
        [sys.executable, "-m", "explainzoo.demo.cli", "list", "explainers"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "centre_cam" in out and "plugin test: activation energy" in out
    for broken in ("broken_import", "broken_exit", "wrong_type"):
        assert f"BROKEN {broken} (from {PLUGIN})" in out
    assert "gradcam " in out


def test_registry_is_lazy_and_cached():
    calls = []

    def validate(obj):
        calls.append(obj)
        return obj

    reg = Registry("explainzoo.explainers", validate)
    names = reg.names()
    assert "gradcam" in names and not calls
    a = reg.load("gradcam")
    b = reg.load("gradcam")
    assert a is b and len(calls) == 1
    assert reg.names("*cam*") == [n for n in names if "cam" in n]
    with pytest.raises(UnknownNameError, match="did you mean 'gradcam'"):
        reg.load("gradcm", kind="explainer")


def test_listing_imports_no_explainer_module():
    code = (
        "import sys; from explainzoo.explainers import list_explainers; "
        "n = list_explainers(); "
        "print(sorted(m for m in sys.modules if m.startswith('explainzoo.explainers.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)
    for heavy in ("explainzoo.explainers.cam", "explainzoo.explainers.gradient",
                  "explainzoo.explainers.grid", "explainzoo.explainers.render"):
        assert heavy not in loaded
