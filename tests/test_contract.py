"""Contract tests: every registered explainer x the contract backbones.

Parametrised over the registry, so an explainer added later (or by a plugin
installed in this venv) is checked with no change here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainzoo.backbones import Backbone, Preprocessing, hook_counts
from explainzoo.explainers import create_explainer, explainer_class, list_explainers
from explainzoo.explainers import targets as T

from .conftest import CONTRACT_BACKBONES, CONTRACT_KWARGS, get_backbone

EXPLAINERS = list_explainers()
#: Options that keep the contract fast on the real backbones (Score-CAM scores every live
#: channel by default: hundreds of passes on a last layer); the contract holds for any value.
FAST_OPTIONS: dict[str, dict] = {"scorecam": {"max_channels": 32}}


def snapshot(model: nn.Module) -> dict:
    """Everything an explanation must leave as it was."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "hooks": hook_counts(model),
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["grad"], after["grad"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for k, v in before["buffers"].items():
        assert torch.equal(v, after["buffers"][k]), k
    assert before["hooks"] == after["hooks"]


def _inputs(name: str, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.randn(n, 3, *CONTRACT_BACKBONES[name], generator=g)


def _mixed_mode(model: nn.Module) -> None:
    """Leave the model in a state a user might: training on, one frozen param, a grad."""
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)
    last = list(model.parameters())[-1]
    last.grad = torch.full_like(last, 0.25)


def _restore(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None


@pytest.mark.parametrize("backbone", list(CONTRACT_BACKBONES))
@pytest.mark.parametrize("method", EXPLAINERS)
def test_contract(method: str, backbone: str) -> None:
    bb = get_backbone(backbone, **CONTRACT_KWARGS.get(backbone, {}))
    explainer = create_explainer(method, **FAST_OPTIONS.get(method, {}))
    x = _inputs(backbone, 2)
    _mixed_mode(bb.model)
    try:
        before = snapshot(bb.model)
        exp = explainer.explain(bb, x)
        assert_same_state(before, snapshot(bb.model))
        assert exp.method == method and exp.backbone == bb.name
        assert len(exp) == 2
        if exp.kind == "map":
            assert exp.maps.shape == (2, *x.shape[-2:]) and exp.maps.dtype == torch.float32
            assert torch.isfinite(exp.maps).all()
            assert float(exp.maps.min()) >= 0 and float(exp.maps.max()) <= 1
            assert exp.targets.shape == (2,) and exp.scores.shape == (2,)
            with torch.no_grad():
                bb.model.eval()
                logits = bb.model(x)
                bb.model.train()
            torch.testing.assert_close(exp.targets, logits.argmax(1))
            torch.testing.assert_close(exp.scores, logits.gather(1, exp.targets[:, None])[:, 0],
                                       rtol=1e-4, atol=1e-4)
        else:
            assert exp.grid.ndim == 4 and exp.grid.shape[0] == 2
            assert torch.isfinite(exp.grid).all()
            assert float(exp.grid.min()) >= 0 and float(exp.grid.max()) <= 1
        if explainer_class(method).uses_layer:
            assert exp.layer in dict(bb.model.named_modules())
        # batches equal per-image results
        single = explainer.explain(bb, x[1:2])
        ref = exp[1]
        a = single.maps if exp.kind == "map" else single.grid
        b = ref.maps if exp.kind == "map" else ref.grid
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)
        assert_same_state(before, snapshot(bb.model))
    finally:
        _restore(bb.model)


class _Injected(RuntimeError):
    pass


@pytest.mark.parametrize("backbone", ["vgg11_ref", "timm:vit_tiny_patch16_224"])
@pytest.mark.parametrize("method", EXPLAINERS)
def test_state_restored_after_failure(method: str, backbone: str) -> None:
    """A call that raises half way leaves the model exactly as it was."""
    bb = get_backbone(backbone, **CONTRACT_KWARGS.get(backbone, {}))
    x = _inputs(backbone, 1)
    explainer = create_explainer(method, **FAST_OPTIONS.get(method, {}))
    if not explainer.needs_input:
        pytest.skip(f"{method} reads weights only: there is no forward pass to break")
    target = bb.module(bb.layers["conv1"])

    def boom(module, args, out):
        raise _Injected("injected failure")

    _mixed_mode(bb.model)
    handle = target.register_forward_hook(boom)
    try:
        before = snapshot(bb.model)
        with pytest.raises(_Injected):
            explainer.explain(bb, x)
        assert_same_state(before, snapshot(bb.model))
    finally:
        handle.remove()
        _restore(bb.model)
    assert hook_counts(bb.model) == dict.fromkeys(hook_counts(bb.model), 0)


@pytest.mark.parametrize("method", EXPLAINERS)
def test_every_explainer_is_documented(method: str) -> None:
    cls = explainer_class(method)
    assert cls.description and len(cls.description.splitlines()) == 1
    assert cls.paper and cls.__doc__
    for name, opt in cls.options.items():
        assert opt.doc, name
        assert opt.coerce(name, opt.default) == opt.default
        assert opt.cost is None or opt.cost in ("passes", "gradients", "batch", "inverse"), name
    assert cls.kind in ("map", "grid")


# -- every explainer x the score targets of issue 12, on a small net ---------------------------

#: Small option values for the many-pass methods (the contract holds for any value).
SMALL_OPTIONS: dict[str, dict] = {
    "smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 4}, "rise": {"masks": 8},
}
#: name -> (target, its value from the logits z, by hand)
SCORE_TARGETS = {
    "contrast": (T.Contrast(0, 3), lambda z: z[:, 0] - z[:, 3]),
    "probability": (T.Probability(2), lambda z: z.softmax(1)[:, 2]),
    "sigmoid": (T.Sigmoid(1), lambda z: z[:, 1].sigmoid()),
    "callable": (lambda out: out[:, 0] - 0.5 * out[:, 2], lambda z: z[:, 0] - 0.5 * z[:, 2]),
}


def _small_backbone() -> Backbone:
    """Conv-BN-ReLU-Dropout-Conv-ReLU-pool-fc on 16x16 inputs: state to keep, 4 classes."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return Backbone("small", model, Preprocessing(input_size=(16, 16)), ["a", "b", "c", "d"],
                    aliases={"conv1": "0", "last": "5"})


_SMALL = _small_backbone()


@pytest.mark.parametrize("target_name", list(SCORE_TARGETS))
@pytest.mark.parametrize("method", EXPLAINERS)
def test_contract_for_score_targets(method: str, target_name: str) -> None:
    bb, (target, by_hand) = _SMALL, SCORE_TARGETS[target_name]
    explainer = create_explainer(method, **SMALL_OPTIONS.get(method, {}))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    _mixed_mode(bb.model)
    try:
        before = snapshot(bb.model)
        exp = explainer.explain(bb, x, target=target)
        assert_same_state(before, snapshot(bb.model))
        assert len(exp) == 2
        if exp.kind == "map":
            assert torch.isfinite(exp.maps).all() and float(exp.maps.min()) >= 0 and float(exp.maps.max()) <= 1
            with torch.no_grad():
                bb.model.eval()
                logits = bb.model(x)
                bb.model.train()
            torch.testing.assert_close(exp.scores, by_hand(logits), rtol=1e-4, atol=1e-5)
        single = explainer.explain(bb, x[1:2], target=target)
        a = single.maps if exp.kind == "map" else single.grid
        b = exp[1].maps if exp.kind == "map" else exp[1].grid
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)
        assert_same_state(before, snapshot(bb.model))
    finally:
        _restore(bb.model)
    assert hook_counts(bb.model) == dict.fromkeys(hook_counts(bb.model), 0)
