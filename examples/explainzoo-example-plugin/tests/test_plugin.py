"""The example plugin's own tests: explainzoo's contract kit, the formula, the family."""

from __future__ import annotations

import pytest
import torch
from explainzoo_example_plugin import GradCAMElementWise

from explainzoo.backbones import UnknownNameError, WeightsUnavailableError, create_backbone, list_backbones
from explainzoo.explainers import create_explainer, list_explainers
from explainzoo.explainers.testing import parametrize_with_checks


def tinynet8():
    torch.manual_seed(0)
    return create_backbone("tinynet:8")


# every rule of explainzoo's contract, on the kit's own tiny CNN and on this plugin's family
@parametrize_with_checks([GradCAMElementWise])
def test_contract(explainer, check):
    check(explainer)


@parametrize_with_checks([GradCAMElementWise], backbone=tinynet8)
def test_contract_on_tinynet(explainer, check):
    check(explainer)


def test_registered_through_entry_points():
    assert "gradcam_elementwise" in list_explainers()
    assert type(create_explainer("gradcam_elementwise")) is GradCAMElementWise
    assert "tinynet:8" in list_backbones("tinynet:*")


def _by_hand(bb, x, layer):
    """A = output of ``layer``, G = d score_top1 / dA, then ReLU(sum_c ReLU(G * A))."""
    seen = {}

    def hook(module, args, out):
        seen["A"] = out.detach().clone().requires_grad_(True)
        return seen["A"].clone()  # a copy: in-place ReLUs downstream must not touch A

    handle = bb.model.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = bb.model(x)
    finally:
        handle.remove()
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (G,) = torch.autograd.grad(score, seen["A"])
    return (G * seen["A"]).clamp(min=0).sum(1).clamp(min=0).detach()


@pytest.mark.parametrize("layer", ["stage2", "stage2.bn", "stage3"])
def test_formula_by_hand(layer):
    bb = tinynet8()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    exp = create_explainer("gradcam_elementwise").explain(bb, x, layer=layer)
    torch.testing.assert_close(exp.raw, _by_hand(bb, x, layer), rtol=1e-4, atol=1e-7)
    assert exp.maps.shape == (2, 64, 64) and float(exp.maps.amax()) == pytest.approx(1.0)


def test_layercam_on_relu_outputs_but_not_on_signed_ones():
    bb = tinynet8()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours, layercam = create_explainer("gradcam_elementwise"), create_explainer("layercam")

    def raw(explainer, layer):
        return explainer.explain(bb, x, layer=layer).raw

    torch.testing.assert_close(raw(ours, "stage2"), raw(layercam, "stage2"))  # A >= 0: the same
    # the residual unit's BatchNorm output is signed and its gradient flows where A < 0 too
    assert not torch.allclose(raw(ours, "stage2.bn"), raw(layercam, "stage2.bn"), atol=1e-6)


def test_family():
    bb = create_backbone("tinynet:16", num_classes=3)
    assert bb.name == "tinynet:16" and bb.num_classes == 3 and bb.weights == "random init"
    assert bb.layers == {"conv1": "conv1", "last": "stage3", "stage1": "stage1", "stage2": "stage2",
                         "stage3": "stage3"}
    assert bb.model(bb.preprocess(torch.rand(3, 80, 100))).shape == (1, 3)
    with pytest.raises(UnknownNameError, match="widths: 4, 8"):
        create_backbone("tinynet:7")
    with pytest.raises(WeightsUnavailableError):
        create_backbone("tinynet:8", pretrained=True)
