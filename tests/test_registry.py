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

from explainzoo.backbones import PluginLoadError, UnknownNameError, WeightsUnavailableError
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

[project.entry-points."explainzoo.backbone_families"]
tinyfam = "{PLUGIN}:TinyFamily"
tinyfn = "{PLUGIN}:create_tiny_by_name"
"""

MODULE = '''
import fnmatch
import torch
from torch import nn
from explainzoo.backbones import Backbone, BackboneFamily, LayerHints, Preprocessing, build_backbone
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


def create_tiny_by_name(model_name, pretrained=False, checkpoint=None, **kwargs):
    """A family as older plugins wrote it: a plain factory with a list_names attribute."""
    bb = create_tiny()
    bb.name = "tinyfn:" + model_name
    return bb


create_tiny_by_name.list_names = lambda pattern: ["small", "smaller"]


class TinyFamily(BackboneFamily):
    name = "tinyfam"

    def list_names(self, pattern="*"):
        return [n for n in ("a1", "b1") if fnmatch.fnmatchcase(n, pattern)]

    def create(self, model_name, pretrained=False, checkpoint=None, **kwargs):
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 2))
        return build_backbone("tinyfam:" + model_name, lambda: model,
                              preprocessing=Preprocessing(input_size=(16, 16)), labels=["x", "y"],
                              pretrained=pretrained, checkpoint=checkpoint,
                              layer_hints=LayerHints(first_conv="0", last=("1",)))
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
    from explainzoo.backbones import backbone_registry, family_registry

    backbone_registry.refresh()
    family_registry.refresh()
    try:
        yield root
    finally:
        subprocess.run([*pip, "uninstall", "-y", PLUGIN], check=True)
        importlib.invalidate_caches()
        explainer_registry.refresh()
        backbone_registry.refresh()
        family_registry.refresh()


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


def test_plugin_backbone_families_class_and_plain_factory(installed_plugin):
    from explainzoo.backbones import BackboneFamily, create_backbone, family_registry, list_backbones

    assert list_backbones("tinyfam:*") == ["tinyfam:a1", "tinyfam:b1"]
    bb = create_backbone("tinyfam:a1")
    assert bb.weights == "random init" and bb.layers == {"conv1": "0", "last": "1"}
    assert isinstance(family_registry.load("tinyfam"), BackboneFamily)
    # an older plugin's plain factory still works, its list_names attribute included
    assert list_backbones("tinyfn:*") == ["tinyfn:small", "tinyfn:smaller"]
    assert create_backbone("tinyfn:small").name == "tinyfn:small"
    # a plugin family built on the builder gets the same weights rules as the built-ins
    with pytest.raises(WeightsUnavailableError, match="tinyfam:a1 has no published weights"):
        create_backbone("tinyfam:a1", pretrained=True)


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


# -- plugin API version, safe mode (os._exit at import), allowlist (issues 11.10 and 13) ----------

EXITER = "import os\nos._exit(3)\n"
FUTURE = '''
explainzoo_api = "1"


class Future:
    explainzoo_api = "2"


class Current:
    pass
'''


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """A registry over a private group whose entries live in importable modules under tmp_path."""
    import os

    from explainzoo.backbones.registry import PluginInfo

    (tmp_path / "ez_exiter_mod.py").write_text(EXITER)
    (tmp_path / "ez_future_mod.py").write_text(FUTURE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    reg = Registry("explainzoo.test_only_group", lambda obj: obj)
    reg._infos = {
        "exiter": PluginInfo("exiter", "ez_exiter_mod:Nothing", "thirdparty-exit", "0.3"),
        "future": PluginInfo("future", "ez_future_mod:Future", "thirdparty-future", "2.0"),
        "current": PluginInfo("current", "ez_future_mod:Current", "thirdparty-future", "2.0"),
        "gradcam": PluginInfo("gradcam", "explainzoo.explainers.cam:GradCAM", "explainzoo", "0.1.0"),
    }
    yield reg
    sys.modules.pop("ez_future_mod", None)


def test_plugin_api_version_is_exposed():
    from explainzoo.backbones import PLUGIN_API_VERSION
    from explainzoo.backbones.registry import api_mismatch

    assert PLUGIN_API_VERSION == "1"
    assert api_mismatch(None) is None and api_mismatch("1") is None and api_mismatch("1.3") is None
    assert "API 2" in api_mismatch("2")


def test_a_plugin_that_calls_os_exit_at_import_is_recorded_in_safe_mode(fake_plugins):
    reg = fake_plugins
    with pytest.raises(PluginLoadError, match="exits with code 3"):
        reg.load("exiter", safe=True)  # we are still alive
    assert "exiter" in reg.failures() and "child process" in reg.failures()["exiter"].error
    assert "ez_exiter_mod" not in sys.modules
    reg.set_safe(True)
    loaded = reg.load_all()
    assert set(loaded) == {"current", "gradcam"}  # built-ins are never probed
    assert set(reg.failures()) == {"exiter", "future"}


def test_an_incompatible_api_version_is_broken_with_the_reason(fake_plugins):
    reg = fake_plugins
    with pytest.raises(PluginLoadError, match="written for explainzoo plugin API 2") as e:
        reg.load("future")
    assert "thirdparty-future" in str(e.value) and "\n" not in str(e.value)
    assert reg.load("current").__name__ == "Current"  # the module declares API 1: compatible


def test_requires_dist_on_explainzoo_is_checked_before_import():
    from types import SimpleNamespace

    from explainzoo.backbones.registry import requirement_mismatch

    assert "requires explainzoo<0.0.1" in requirement_mismatch(SimpleNamespace(requires=["explainzoo<0.0.1"]))
    assert requirement_mismatch(SimpleNamespace(requires=["explainzoo>=0.1", "torch"])) is None
    assert requirement_mismatch(SimpleNamespace(requires=["explainzoo<0.0.1; extra == 'x'"])) is None
    assert requirement_mismatch(SimpleNamespace(requires=None)) is None


def test_the_allowlist_refuses_third_party_plugins_and_keeps_builtins(fake_plugins):
    reg = fake_plugins
    reg.restrict({"current"})
    assert reg.names() == ["current", "gradcam"]
    assert [i.name for i in reg.refused()] == ["exiter", "future"]
    with pytest.raises(PluginLoadError, match="not allowed on this host"):
        reg.load("exiter")
    assert "ez_exiter_mod" not in sys.modules and not reg.failures()
    reg.restrict({"thirdparty-future"})  # a distribution name allows all of its entries
    assert reg.names() == ["current", "future", "gradcam"]
    reg.restrict(None)
    assert len(reg.names()) == 4


def test_infos_carry_the_distribution_version():
    from importlib import metadata

    info = explainer_registry.infos()["gradcam"]
    assert info.dist == "explainzoo" and info.dist_version == metadata.version("explainzoo")
