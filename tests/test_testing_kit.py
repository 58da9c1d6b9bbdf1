"""The contract kit (explainzoo.explainers.testing): built-ins pass it, broken explainers fail it.

Each broken explainer below breaks one rule of the contract, the way a plugin
might (most of them outside the template's guard, which would otherwise repair
the model for them); the kit must fail it with a message naming that rule.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch.nn.modules.module as torch_module

from explainzoo.backbones import ExplainzooError
from explainzoo.explainers import CAMExplainer, Option, create_explainer, explainer_class, explainer_registry
from explainzoo.explainers.testing import (
    CHECKS,
    ContractError,
    check_explainer,
    make_backbone,
    parametrize_with_checks,
)

GradCAM = explainer_class("gradcam")

#: Small option values keep the many-pass methods fast on the kit's tiny CNN.
SMALL = {
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 4},
    "rise": {"masks": 8},
    "scorecam": {"max_channels": 8},
}
#: The slowest on 2 shared cores (a second or more per check): marked slow.
SLOW = ("integrated_gradients", "guided_gradcam", "ablationcam")
BUILTINS = [n for n, info in explainer_registry.infos().items() if info.builtin]


def _builtins(slow: bool) -> list:
    return [create_explainer(n, **SMALL.get(n, {})) for n in BUILTINS if (n in SLOW) == slow]


@parametrize_with_checks(_builtins(slow=False))
def test_builtin_passes_the_kit(explainer, check):
    check(explainer)


@pytest.mark.slow
@parametrize_with_checks(_builtins(slow=True))
def test_slow_builtin_passes_the_kit(explainer, check):
    check(explainer)


def test_every_builtin_is_covered():
    assert len(BUILTINS) >= 17
    assert {"gradcam", "filters", "rise", "integrated_gradients"} <= set(BUILTINS)


# -- deliberately broken explainers: one rule each -----------------------------------------------


class _Base(GradCAM):
    """Grad-CAM with one rule broken (for the kit's tests)."""


class MutatesTraining(_Base):
    """Calls model.eval() after the template: the caller's training mode is lost."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target, layer=layer)
        backbone.model.eval()  # outside the template's guard: the caller's training mode is lost
        return exp


class LeavesHook(_Base):
    """Registers a forward hook after the template and never removes it."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target, layer=layer)
        backbone.model.get_submodule("relu3").register_forward_hook(lambda *a: None)  # never removed
        return exp


class LeavesGlobalHook(_Base):
    """Registers a global module hook after the template (inside a step the guard removes it)."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target, layer=layer)
        torch_module.register_module_forward_hook(lambda *a: None)  # never removed
        return exp


class LeavesTensorHook(_Base):
    """Registers a hook on a parameter tensor after the template."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target, layer=layer)
        list(backbone.model.parameters())[-1].register_hook(lambda g: g)  # never removed
        return exp


class WritesGrad(_Base):
    """Runs backward() on the model after the template: every parameter's .grad is written."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target, layer=layer)
        backbone.model(x).sum().backward()  # .grad written on every parameter
        return exp


class ReturnsNaN(_Base):
    """Returns maps with NaN in them."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target, layer=layer)
        maps = exp.maps.clone()
        maps[:, 0, 0] = float("nan")
        return dataclasses.replace(exp, maps=maps)


class IgnoresLayer(_Base):
    """Drops the layer argument: always the default layer."""

    def explain(self, backbone, x=None, target=None, layer=None):
        return super().explain(backbone, x, target=target)  # always the default layer


class IgnoresLayerQuietly(_Base):
    """Computes the default layer's map but reports the layer asked for."""

    def explain(self, backbone, x=None, target=None, layer=None):
        exp = super().explain(backbone, x, target=target)  # the default layer's map...
        return dataclasses.replace(exp, layer=backbone.resolve_layer(layer or "last"))  # ...named as asked


class BadBounds(_Base):
    """Declares bounds on an option but never validates it."""

    options = {"steps": Option(4, "a bound the class does not enforce", low=1, high=8)}

    def __init__(self, **options):
        self.config = {"steps": 4, **options}  # skips validation


class NoPaper(_Base):
    """Has no paper reference."""

    paper = ""


class SwallowsErrors(_Base):
    """Catches a failure of the model and returns the map of another input instead."""

    def explain(self, backbone, x=None, target=None, layer=None):
        try:
            return super().explain(backbone, x, target=target, layer=layer)
        except Exception:  # noqa: BLE001 - the bug under test
            return super().explain(backbone, x * 0, target=target, layer=layer)


#: (class, the check that must fail, words of its message, other checks that may fail as a consequence)
BROKEN = [
    (MutatesTraining, "state", "rule 'training flags unchanged'", ()),
    (LeavesHook, "hooks", "rule 'no hooks left': left behind: 1 forward_hooks of module 'relu3'", ()),
    (LeavesGlobalHook, "hooks", "rule 'no hooks left': left behind: 1 global_forward_hooks", ()),
    (LeavesTensorHook, "hooks", "rule 'no hooks left': left behind: 1 backward_hooks of tensor 'fc.bias'", ()),
    # the extra pass also ran in training mode: BatchNorm statistics moved, later maps differ
    (WritesGrad, "state", "rule 'no parameter .grad written'", ("batch", "threads")),
    (ReturnsNaN, "output", "rule 'finite': 2 NaN/inf values", ("batch", "threads")),
    (IgnoresLayer, "layer", "rule 'layer honoured': layer='conv1' gave .layer 'relu3'", ()),
    (IgnoresLayerQuietly, "layer", "give the same map as 'relu3': the layer is ignored", ()),
    (BadBounds, "options", "rule 'option bounds': steps=0 is beyond its bounds and was accepted", ()),
    (NoPaper, "metadata", "rule 'paper present'", ()),
    (SwallowsErrors, "failure", "rule 'errors propagate'", ()),
]


@pytest.mark.parametrize(("cls", "check", "words", "also"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_broken_explainer_fails_naming_the_rule(cls, check, words, also):
    with pytest.raises(ContractError) as info:
        check_explainer(cls)
    err = info.value
    assert check in err.failures, err.failures
    assert words in err.failures[check]
    assert set(err.failures) <= {check, *also}, err.failures
    assert f"[{check}] rule '" in str(err) and "\n" not in str(err) and cls.__name__ in str(err)


def test_the_kit_repairs_what_a_broken_explainer_left():
    bb = make_backbone()
    global_before = dict(torch_module._global_forward_hooks)
    for cls in (LeavesHook, LeavesGlobalHook, LeavesTensorHook, MutatesTraining, WritesGrad):
        with pytest.raises(ContractError):
            check_explainer(cls, backbone=bb)
    assert dict(torch_module._global_forward_hooks) == global_before
    assert not bb.model.relu3._forward_hooks
    assert all(not p._backward_hooks for p in bb.model.parameters())
    assert all(p.grad is None for p in bb.model.parameters()) and not bb.model.training
    check_explainer(GradCAM, backbone=bb)  # and the backbone is fit for the next explainer


def test_check_explainer_takes_a_class_an_instance_and_options():
    check_explainer(GradCAM)
    check_explainer(create_explainer("rise", masks=4), backbone=make_backbone)
    check_explainer(explainer_class("smoothgrad"), options={"samples": 2})
    with pytest.raises(ExplainzooError, match="samples"):  # the caller's mistake, not a broken contract
        check_explainer(explainer_class("smoothgrad"), options={"samples": 0})


def test_parametrize_ids_and_layer_check_only_for_layer_methods():
    mark = parametrize_with_checks([GradCAM, create_explainer("saliency")])
    ids = mark.kwargs["ids"]
    names = [c.name for c in CHECKS]
    assert ids[: len(names)] == [f"GradCAM-{n}" for n in names]
    assert "saliency-layer" not in ids and "saliency-threads" in ids
    explainer, check = mark.args[1][0]
    assert explainer is GradCAM and check.name == "metadata"
    check(explainer)


def test_a_plugin_cam_built_on_the_template_passes():
    class EnergyCAM(CAMExplainer):
        """The layer's activation energy, sum_c A_c^2 (a toy for the test)."""

        description = "toy: activation energy"
        paper = "none (a test toy)"
        needs_gradient = False

        def combine(self, A, G, ctx):
            return A.pow(2).sum(1)

    check_explainer(EnergyCAM)


class HooksInsideAStep(_Base):
    """Leaks a global hook and a tensor hook inside a template step: the template's guard removes both."""

    def combine(self, A, G, ctx):
        torch_module.register_module_forward_hook(lambda *a: None)
        list(ctx.model.parameters())[-1].register_hook(lambda g: g)
        return super().combine(A, G, ctx)


def test_hooks_leaked_inside_a_step_are_removed_by_the_template():
    before = sum(len(getattr(torch_module, n)) for n in dir(torch_module)
                 if n.startswith("_global_") and n.endswith("_hooks"))
    check_explainer(HooksInsideAStep)  # passes: the guard restored what the step left
    after = sum(len(getattr(torch_module, n)) for n in dir(torch_module)
                if n.startswith("_global_") and n.endswith("_hooks"))
    assert after == before
