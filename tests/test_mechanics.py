"""The mechanics every explainer obeys (DESIGN.md), checked directly."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

from explainzoo.backbones import Backbone, ExplainzooError, Preprocessing, hook_counts
from explainzoo.explainers import create_explainer, explain

from .conftest import get_backbone


def _not_inplace(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    for mod in m.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    return m


@pytest.mark.parametrize("layer", ["layer4.1.bn2", "layer3", "layer4.0.conv1", "last"])
def test_inplace_relu_after_layer_does_not_corrupt_the_map(layer):
    """timm's ResNet uses ReLU(inplace=True) right after its BN layers."""
    bb = get_backbone("timm:resnet18")
    assert any(getattr(m, "inplace", False) for m in bb.model.modules())
    twin = Backbone("twin", _not_inplace(bb.model), bb.preprocessing, bb.labels)
    x = torch.randn(2, 3, 96, 96)
    a = explain("gradcam", bb, x, layer=layer)
    b = explain("gradcam", twin, x, layer=bb.resolve_layer(layer))
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.raw, b.raw, rtol=1e-5, atol=1e-6)
    if layer != "last":  # bn2's raw output has negatives: the in-place ReLU must not have zeroed them
        acts = explain("activations", bb, x, layer=layer)
        acts_twin = explain("activations", twin, x, layer=layer)
        torch.testing.assert_close(acts.tiles, acts_twin.tiles)


def test_eval_mode_whatever_the_caller_left():
    """Dropout off and BatchNorm on running statistics during the call."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.9),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
    bb = Backbone("tiny", model, Preprocessing(input_size=(16, 16)), [f"c{i}" for i in range(4)],
                  aliases={"last": "2", "conv1": "0"})
    x = torch.randn(3, 3, 16, 16)
    model.eval()
    ref = explain("gradcam", bb, x)
    model.train()
    mean_before = model[1].running_mean.clone()
    for _ in range(3):
        torch.testing.assert_close(explain("gradcam", bb, x).maps, ref.maps)
        torch.testing.assert_close(explain("saliency", bb, x).maps, explain("saliency", bb, x).maps)
    assert model.training and model[3].training
    assert torch.equal(model[1].running_mean, mean_before)


def test_gradients_stop_at_the_layer_and_no_param_grad_is_written():
    bb = get_backbone("timm:resnet18")
    grad_mode = {}

    def record(name):
        def hook(module, args, out):
            grad_mode[name] = torch.is_grad_enabled()
        return hook

    handles = [bb.module(p).register_forward_hook(record(p)) for p in ("layer2", "layer4", "fc")]
    try:
        exp = explain("gradcam", bb, torch.randn(1, 3, 64, 64), layer="layer3")
    finally:
        for h in handles:
            h.remove()
    assert exp.layer == "layer3"
    assert grad_mode == {"layer2": False, "layer4": True, "fc": True}
    assert all(p.grad is None for p in bb.model.parameters())
    assert torch.is_grad_enabled()


def test_all_zero_maps_are_zeros_not_nan():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    bb = Backbone("zero", model, Preprocessing(input_size=(8, 8)), ["a", "b"],
                  aliases={"last": "1", "conv1": "0"})
    x = torch.randn(2, 3, 8, 8)
    for method in ("gradcam", "saliency"):
        exp = explain(method, bb, x)
        assert torch.equal(exp.maps, torch.zeros(2, 8, 8)), method
    grid = explain("filters", bb).grid
    assert torch.isfinite(grid).all()


def test_threads_share_one_backbone_without_cross_talk(lite0):
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    explainer = create_explainer("gradcam")
    expected = [explainer.explain(lite0, images[i : i + 1]).maps for i in range(4)]
    errors: list[BaseException] = []
    results: dict[tuple[int, int], torch.Tensor] = {}

    def worker(i: int) -> None:
        try:
            for j in range(25):
                results[(i, j)] = explainer.explain(lite0, images[i : i + 1]).maps
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 100
    for (i, _), maps in results.items():
        assert torch.equal(maps, expected[i])
    assert hook_counts(lite0.model) == dict.fromkeys(hook_counts(lite0.model), 0)


def test_caller_inside_inference_mode_and_bare_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    with torch.inference_mode():
        x = torch.randn(1, 3, 8, 8)
        exp = explain("gradcam", model, x, layer="1")
    assert exp.maps.shape == (1, 8, 8) and exp.backbone == "Sequential"
    assert torch.is_grad_enabled()


def test_bad_inputs_are_clear_errors(vgg):
    with pytest.raises(ExplainzooError, match=r"\(N,3,H,W\)"):
        explain("gradcam", vgg, torch.randn(1, 1, 32, 32))
    with pytest.raises(ExplainzooError, match="preprocess"):
        explain("gradcam", vgg, [[1.0]])
    with pytest.raises(ExplainzooError, match="NaN"):
        explain("gradcam", vgg, torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ExplainzooError, match="takes no layer"):
        explain("saliency", vgg, torch.randn(1, 3, 32, 32), layer="last")
    with pytest.raises(ExplainzooError, match="2 targets for a batch of 1"):
        explain("gradcam", vgg, torch.randn(1, 3, 32, 32), target=[1, 2])
    with pytest.raises(ExplainzooError, match="does not produce a spatial map"):
        explain("gradcam", vgg, torch.randn(1, 3, 32, 32), layer="fc_out")
    with pytest.raises(ExplainzooError, match="unknown option 'stepz'"):
        create_explainer("activations", stepz=3)
    with pytest.raises(ExplainzooError, match="must be one of"):
        create_explainer("activations", order="random")
    with pytest.raises(ExplainzooError, match=">= 0"):
        create_explainer("activations", max_channels="-1")
    assert create_explainer("activations", max_channels="8").config["max_channels"] == 8


def test_targets_by_name_index_and_per_image(lite0):
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    a = explain("gradcam", lite0, x, target="tabby")
    assert a.targets.tolist() == [281, 281]
    b = explain("gradcam", lite0, x, target=[281, 5])
    assert b.targets.tolist() == [281, 5]
    torch.testing.assert_close(a.maps[0], b.maps[0])


def test_layer_that_runs_twice_is_refused():
    shared = nn.Conv2d(3, 3, 3, padding=1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = shared
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.shared(self.shared(x)).mean((2, 3)))

    bb = Backbone("twice", Twice(), Preprocessing(input_size=(8, 8)), ["a", "b"], aliases={"last": "shared"})
    with pytest.raises(ExplainzooError, match="more than once"):
        explain("gradcam", bb, torch.randn(1, 3, 8, 8))
    assert hook_counts(bb.model) == dict.fromkeys(hook_counts(bb.model), 0)


# -- the cached clean pass, the logits on the result, declared kinds and costs ------------


class _CountingNet(nn.Module):
    """A tiny CNN that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.pool(self.act(self.conv1(x))).flatten(1))


def _counting_backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone("counting", _CountingNet(), Preprocessing(input_size=(12, 12)), ["a", "b", "c"],
                    aliases={"conv1": "conv1", "last": "act"})


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "layercam", "eigencam", "saliency",
                                    "guided_backprop"])
def test_one_forward_pass_gives_the_map_and_the_logits(method):
    bb = _counting_backbone()
    x = torch.randn(2, 3, 12, 12)
    explain(method, bb, x)  # the backbone probes its layers' formats once, on first use
    bb.model.calls = 0
    exp = explain(method, bb, x)
    assert bb.model.calls == 1
    with torch.no_grad():
        logits = bb.model(x)
    assert exp.logits is not None and exp.logits.dtype == torch.float32 and exp.logits.shape == (2, 3)
    torch.testing.assert_close(exp.logits, logits)
    torch.testing.assert_close(exp.probabilities, logits.softmax(1))
    torch.testing.assert_close(exp.targets, logits.argmax(1))
    assert exp[1].logits.shape == (1, 3)


@pytest.mark.parametrize("method,options", [
    ("scorecam", {}), ("ablationcam", {}), ("occlusion", {}), ("rise", {"masks": 4}),
    ("smoothgrad", {"samples": 2}), ("integrated_gradients", {"steps": 4}),
    ("integrated_gradients", {"steps": 4, "rule": "midpoint"}), ("guided_gradcam", {}),
])
def test_every_map_method_reports_the_clean_logits(method, options):
    bb = _counting_backbone()
    x = torch.randn(2, 3, 12, 12)
    exp = explain(method, bb, x, **options)
    with torch.no_grad():
        logits = bb.model(x)
    torch.testing.assert_close(exp.logits, logits, rtol=1e-4, atol=1e-5)


def test_grid_methods_declare_their_kind_and_run_no_clean_pass():
    bb = _counting_backbone()
    x = torch.randn(1, 3, 12, 12)
    for method in ("filters", "activations"):
        exp = explain(method, bb, x)
        assert exp.kind == "grid" and exp.logits is None and exp.probabilities is None
    assert explain("gradcam", bb, x).kind == "map"


def test_options_declare_what_scales_the_cost():
    from explainzoo.explainers import explainer_class
    from explainzoo.explainers.options import COSTS

    assert explainer_class("scorecam").cost_options().keys() == {"max_channels", "batch_size"}
    assert explainer_class("scorecam").options["max_channels"].unbounded == 0
    assert explainer_class("occlusion").options["window"].cost == "inverse"
    assert explainer_class("smoothgrad").options["samples"].cost == "gradients"
    assert explainer_class("gradcam").cost_options() == {}
    for name in ("rise", "integrated_gradients", "ablationcam"):
        assert explainer_class(name).cost_options(), name
        assert all(o.cost in COSTS for o in explainer_class(name).cost_options().values())


@pytest.mark.parametrize("value", ["nan", float("nan"), float("inf"), "-inf"])
def test_non_finite_option_values_are_refused(value):
    with pytest.raises(ExplainzooError, match="finite"):
        create_explainer("smoothgrad", noise=value)


def test_raw_map_is_the_signed_map_before_relu():
    bb = _counting_backbone()
    x = torch.randn(2, 3, 12, 12)
    cam = create_explainer("gradcam")
    signed = cam.raw_map(bb, x, target=1)
    exp = cam.explain(bb, x, target=1)
    torch.testing.assert_close(signed.clamp(min=0), exp.raw)
    # linear in the score: the map of (logit 0 - logit 1) is the difference of the maps
    assert torch.allclose(cam.raw_map(bb, x, target=0) - signed,
                          _contrast_gradcam(bb, x, 0, 1), atol=1e-6)


def _contrast_gradcam(bb: Backbone, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Grad-CAM before ReLU of logit a - logit b, by hand."""
    acts = {}
    h = bb.model.act.register_forward_hook(lambda m, i, o: acts.setdefault("A", o))
    try:
        out = bb.model(x)
    finally:
        h.remove()
    A = acts["A"]
    (G,) = torch.autograd.grad((out[:, a] - out[:, b]).sum(), A)
    return (G.mean(dim=(2, 3), keepdim=True) * A).sum(1).detach()
