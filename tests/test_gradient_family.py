"""SmoothGrad, Integrated Gradients, Guided Backprop and Guided Grad-CAM.

Golden values on the hand-weighted nets of tests/tiny_nets.py (by hand where
the model is linear, by an independent float64 loop otherwise), completeness
of Integrated Gradients, and Guided Backprop checked against the classic
module-swapping implementation on a copy of the model (module ReLUs) and a
patched forward on a copy (vgg11_ref's functional ReLU).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainzoo.backbones import create_backbone, hook_counts
from explainzoo.explainers import create_explainer, explain
from explainzoo.explainers.gradient import adaptive_path_average, path_points
from explainzoo.explainers.guided import GuidedMode
from explainzoo.explainers.mechanics import generator, upsample

from .tiny_nets import logits64, one_torch_thread, tiny_backbone, tiny_input


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone()


@pytest.fixture(scope="module")
def linear():
    return tiny_backbone(linear=True, name="tiny_linear")


def grad64(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """d logit_target / d x for one (3,H,W) image, float64, by plain autograd."""
    m = copy.deepcopy(model).double()
    leaf = x.double()[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(leaf)[0, target], leaf)
    return g[0]


# -- SmoothGrad ------------------------------------------------------------------------


def test_smoothgrad_without_noise_is_the_abs_gradient(tiny) -> None:
    x = tiny_input(2)
    exp = explain("smoothgrad", tiny, x, noise=0.0, samples=3)
    for i in range(2):
        expected = grad64(tiny.model, x[i], int(exp.targets[i])).abs().amax(0)
        torch.testing.assert_close(exp.raw[i], expected.float(), atol=1e-6, rtol=1e-5)


def test_smoothgrad_of_a_linear_model_is_its_weight_map(linear) -> None:
    """The gradient of a linear model is the same everywhere: noise cannot change it."""
    x = tiny_input(1)
    exp = explain("smoothgrad", linear, x, noise=0.5, samples=4)
    expected = grad64(linear.model, torch.zeros(3, 8, 8), int(exp.targets[0])).abs().amax(0)
    torch.testing.assert_close(exp.raw[0], expected.float(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("square", [False, True])
def test_smoothgrad_golden(tiny, square: bool) -> None:
    x = tiny_input(2)
    exp = explain("smoothgrad", tiny, x, samples=5, noise=0.3, seed=4, batch_size=2, square=square)
    for i in range(2):
        g = generator(4)
        sigma = 0.3 * float(x[i].max() - x[i].min())
        total = torch.zeros(3, 8, 8, dtype=torch.float64)
        for _ in range(5):
            noisy = x[i] + sigma * torch.randn(3, 8, 8, generator=g)
            total += grad64(tiny.model, noisy, int(exp.targets[i]))
        mean = total / 5
        expected = (mean**2 if square else mean.abs()).amax(0)
        torch.testing.assert_close(exp.raw[i], expected.float(), atol=1e-6, rtol=1e-5)


def test_smoothgrad_targets_come_from_the_clean_image(tiny) -> None:
    x = tiny_input(2)
    exp = explain("smoothgrad", tiny, x, noise=2.0)
    torch.testing.assert_close(exp.targets, tiny.model(x).argmax(1))


def test_smoothgrad_is_seeded_per_image(tiny) -> None:
    x = tiny_input(3)
    batch = explain("smoothgrad", tiny, x, samples=6, batch_size=4)
    for i in range(3):
        torch.testing.assert_close(batch[i].raw, explain("smoothgrad", tiny, x[i : i + 1], samples=6).raw)
    assert not torch.allclose(batch.raw, explain("smoothgrad", tiny, x, samples=6, seed=9).raw)


# -- Integrated Gradients --------------------------------------------------------------


def _baseline(bb, kind: str) -> torch.Tensor:
    if kind == "mean":
        return torch.zeros(3, 1, 1)
    return ((0 - torch.tensor(bb.preprocessing.mean)) / torch.tensor(bb.preprocessing.std)).view(3, 1, 1)


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_integrated_gradients_of_a_linear_model_by_hand(linear, baseline: str) -> None:
    """IG = (x - x') * W for a linear model, whatever the number of steps."""
    x = tiny_input(1)
    exp = explain("integrated_gradients", linear, x, steps=3, sign="signed", baseline=baseline)
    w = grad64(linear.model, torch.zeros(3, 8, 8), int(exp.targets[0]))
    expected = ((x[0].double() - _baseline(linear, baseline).double()) * w).sum(0)
    torch.testing.assert_close(exp.raw[0], expected.float(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rule", ["midpoint", "trapezoid", "right"])
def test_integrated_gradients_golden(tiny, rule: str) -> None:
    x = tiny_input(2)
    steps = 7
    exp = explain("integrated_gradients", tiny, x, steps=steps, rule=rule, sign="signed", batch_size=3)
    base = _baseline(tiny, "black").double().expand(3, 8, 8)
    if rule == "midpoint":
        alphas, weights = [(k + 0.5) / steps for k in range(steps)], [1 / steps] * steps
    elif rule == "right":
        alphas, weights = [(k + 1) / steps for k in range(steps)], [1 / steps] * steps
    else:
        alphas = [k / (steps - 1) for k in range(steps)]
        weights = [0.5 / (steps - 1)] + [1 / (steps - 1)] * (steps - 2) + [0.5 / (steps - 1)]
    for i in range(2):
        t = int(exp.targets[i])
        avg = sum(w * grad64(tiny.model, base + a * (x[i].double() - base), t) for a, w in zip(alphas, weights))
        expected = ((x[i].double() - base) * avg).sum(0)
        torch.testing.assert_close(exp.raw[i], expected.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("rule", "steps"), [("adaptive", 12), ("trapezoid", 7), ("right", 7), ("midpoint", 7)])
def test_integrated_gradients_takes_target_and_score_from_the_path(tiny, rule: str, steps: int) -> None:
    """Rules with a node at alpha = 1 need no separate clean forward pass for the target and score."""
    x = tiny_input(1)
    rows: list[int] = []
    handle = tiny.model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        exp = explain("integrated_gradients", tiny, x, steps=steps, rule=rule, batch_size=3)
    finally:
        handle.remove()
    assert sum(rows) == steps + (rule == "midpoint")  # images seen: the path (+ the clean one)
    logits = tiny.model(x)
    torch.testing.assert_close(exp.targets, logits.argmax(1))
    torch.testing.assert_close(exp.scores, logits.gather(1, exp.targets[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    given = explain("integrated_gradients", tiny, x, steps=steps, rule=rule, batch_size=3, target=2)
    assert int(given.targets[0]) == 2
    torch.testing.assert_close(given.scores, logits[:, 2], atol=1e-5, rtol=1e-5)


def test_adaptive_path_average_finds_a_steep_step() -> None:
    """S(a) = sigmoid(400 (a - 0.03)): nearly all of the change within 2% of the path.
    64 adaptive nodes integrate S' to 0.5%; 64 uniform midpoints miss by over 5%."""
    k, c = 400.0, 0.03

    def evaluate(alphas: torch.Tensor):
        s = torch.sigmoid(k * (alphas.double() - c))
        return (k * s * (1 - s))[:, None], s

    exact = float(torch.sigmoid(torch.tensor(k * (1 - c), dtype=torch.float64))
                  - torch.sigmoid(torch.tensor(-k * c, dtype=torch.float64)))
    adaptive = float(adaptive_path_average(evaluate, torch.ones(1), 64, 16)[0])
    assert adaptive == pytest.approx(exact, rel=5e-3)
    alphas, weights = path_points(64, "midpoint")
    uniform = float((evaluate(alphas)[0][:, 0] * weights).sum())
    assert abs(uniform - exact) / exact > 0.05


def test_path_points_weights_sum_to_one() -> None:
    for rule in ("midpoint", "trapezoid", "right"):
        alphas, weights = path_points(10, rule)
        assert float(weights.sum()) == pytest.approx(1.0)
        assert float(alphas.min()) >= 0 and float(alphas.max()) <= 1


@pytest.mark.parametrize("rule", ["adaptive", "midpoint"])
def test_integrated_gradients_completeness_tiny(tiny, rule: str) -> None:
    x = tiny_input(3)
    exp = explain("integrated_gradients", tiny, x, steps=64, sign="signed", rule=rule)
    base = _baseline(tiny, "black").expand(1, 3, 8, 8)
    for i in range(3):
        t = int(exp.targets[i])
        delta = float(logits64(tiny.model, x[i : i + 1])[0, t] - logits64(tiny.model, base)[0, t])
        assert abs(delta) > 0.1
        assert float(exp.raw[i].sum()) == pytest.approx(delta, rel=0.01)


def test_integrated_gradients_completeness_real_network(lite0, chelsea) -> None:
    """EfficientNet-Lite0 (offline ImageNet weights) on a real photo, at 128 px: the
    score jumps near the black baseline (64 uniform midpoints miss by 22%); the
    default adaptive nodes get within 1%."""
    x = F.interpolate(lite0.preprocess(chelsea), size=(128, 128), mode="bilinear", antialias=True)
    exp = explain("integrated_gradients", lite0, x, steps=64, sign="signed", batch_size=32)
    t = int(exp.targets[0])
    base = _baseline(lite0, "black").expand(1, 3, 128, 128)
    with torch.no_grad():
        delta = float(lite0.model(x)[0, t] - lite0.model(base)[0, t])
    assert abs(delta) > 1
    assert float(exp.raw[0].double().sum()) == pytest.approx(delta, rel=0.01)


def test_integrated_gradients_sign_option(tiny) -> None:
    x = tiny_input(1)
    signed = explain("integrated_gradients", tiny, x, sign="signed").raw
    assert (signed < 0).any() and (signed > 0).any()
    torch.testing.assert_close(explain("integrated_gradients", tiny, x).raw, signed.abs())
    torch.testing.assert_close(explain("integrated_gradients", tiny, x, sign="positive").raw, signed.clamp(min=0))


# -- Guided Backprop -------------------------------------------------------------------


def guided_tiny_by_hand(model, x: torch.Tensor, target: int) -> torch.Tensor:
    """Springenberg's rule written out through conv1, act1, conv2, act2, pool, fc."""
    m = copy.deepcopy(model).double()
    x = x.double()[None]
    z1 = F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1)
    z2 = F.conv2d(F.relu(z1), m.conv2.weight, m.conv2.bias)
    r = (m.fc.weight[target] / 64).view(1, 3, 1, 1).expand_as(z2)  # through fc and the mean
    r = (z2 > 0) * r.clamp(min=0)  # guided act2
    r = F.conv_transpose2d(r, m.conv2.weight)  # through the 1x1 conv2
    r = (z1 > 0) * r.clamp(min=0)  # guided act1
    return F.conv_transpose2d(r, m.conv1.weight, padding=1)[0]  # through conv1


def test_guided_backprop_golden(tiny) -> None:
    x = tiny_input(2)
    exp = explain("guided_backprop", tiny, x)
    for i in range(2):
        expected = guided_tiny_by_hand(tiny.model, x[i], int(exp.targets[i])).abs().amax(0)
        torch.testing.assert_close(exp.raw[i], expected.float(), atol=1e-6, rtol=1e-5)
        plain = grad64(tiny.model, x[i], int(exp.targets[i])).abs().amax(0)
        assert not torch.allclose(expected, plain)  # the guided rule did something


class _GuidedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0)


class _GuidedReLU(nn.Module):
    def forward(self, x):
        return _GuidedReLUFn.apply(x)


def _swap_relus(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, _GuidedReLU())
        else:
            _swap_relus(child)


def _module_types(model: nn.Module) -> list[tuple[str, type]]:
    return [(n, type(m)) for n, m in model.named_modules()]


def test_guided_backprop_matches_module_swapping_on_resnet() -> None:
    torch.manual_seed(0)
    bb = create_backbone("timm:resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    types = _module_types(bb.model)
    state = {k: v.clone() for k, v in bb.model.state_dict().items()}
    exp = explain("guided_backprop", bb, x)
    ref_model = copy.deepcopy(bb.model).eval()
    _swap_relus(ref_model)
    leaf = x.clone().requires_grad_(True)
    out = ref_model(leaf)
    (g,) = torch.autograd.grad(out.gather(1, exp.targets[:, None]).sum(), leaf)
    torch.testing.assert_close(exp.raw, g.abs().amax(1), atol=1e-6, rtol=1e-4)
    # the caller's model is untouched: same module types, same weights, no hooks
    assert _module_types(bb.model) == types
    assert all(torch.equal(v, bb.model.state_dict()[k]) for k, v in state.items())
    assert sum(hook_counts(bb.model).values()) == 0


def test_guided_backprop_covers_functional_relu_on_vgg11_ref(vgg) -> None:
    """vgg11_ref calls F.relu(..., inplace=True) in its forward: no module to swap."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    exp = explain("guided_backprop", vgg, x)
    ref = copy.deepcopy(vgg.model).eval()
    b = ref.backbone
    leaf = x.clone().requires_grad_(True)
    h = leaf
    for conv, bn, pool in [
        ("conv1", "bn1", "pool1"), ("conv2", "bn2", "pool2"), ("conv3_1", "bn3_1", None),
        ("conv3_2", "bn3_2", "pool3"), ("conv4_1", "bn4_1", None), ("conv4_2", "bn4_2", "pool4"),
        ("conv5_1", "bn5_1", None), ("conv5_2", "bn5_2", None),
    ]:
        h = _GuidedReLUFn.apply(getattr(b, bn)(getattr(b, conv)(h)))
        if pool:
            h = getattr(b, pool)(h)
    out = ref.fc_out(ref.gap(h).flatten(1))
    (g,) = torch.autograd.grad(out[0, int(exp.targets[0])], leaf)
    torch.testing.assert_close(exp.raw[0], g[0].abs().amax(0), atol=1e-6, rtol=1e-4)
    plain = explain("saliency", vgg, x).raw.sqrt()
    assert not torch.allclose(exp.raw, plain, atol=1e-6)


def test_guided_mode_is_per_thread() -> None:
    x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    upstream = torch.tensor([5.0, -7.0, 11.0])
    seen: list[torch.Tensor] = []

    def other_thread() -> None:
        (g,) = torch.autograd.grad(F.relu(x), x, upstream)
        seen.append(g)

    with GuidedMode():
        (guided,) = torch.autograd.grad(F.relu(x), x, upstream)
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    torch.testing.assert_close(guided, torch.tensor([0.0, 0.0, 11.0]))
    torch.testing.assert_close(seen[0], torch.tensor([0.0, -7.0, 11.0]))
    (after,) = torch.autograd.grad(F.relu(x), x, upstream)  # the mode is gone
    torch.testing.assert_close(after, torch.tensor([0.0, -7.0, 11.0]))


def test_guided_gradcam_is_guided_times_upsampled_gradcam(vgg) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    exp = explain("guided_gradcam", vgg, x)
    assert exp.layer == "backbone.bn5_2"
    guided = explain("guided_backprop", vgg, x, target=exp.targets.tolist()).raw
    cam = explain("gradcam", vgg, x, target=exp.targets.tolist()).raw  # (2, 4, 4)
    torch.testing.assert_close(exp.raw, guided * upsample(cam, (64, 64)), atol=1e-6, rtol=1e-4)


def test_guided_gradcam_on_the_tiny_net(tiny) -> None:
    x = tiny_input(1)
    exp = explain("guided_gradcam", tiny, x, target=1)
    guided = guided_tiny_by_hand(tiny.model, x[0], 1).abs().amax(0)
    from .tiny_nets import act_and_grad

    A, G, _ = act_and_grad(tiny.model, x, torch.tensor([1]))
    cam = torch.relu((G.mean(dim=(2, 3), keepdim=True) * A).sum(1))[0]
    torch.testing.assert_close(exp.raw[0], (guided * cam).float(), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients", "guided_backprop", "guided_gradcam"])
def test_gradient_methods_batch_equals_single_and_no_hooks(tiny, method: str) -> None:
    x = tiny_input(3)
    batch = explain(method, tiny, x)
    for i in range(3):
        torch.testing.assert_close(batch[i].maps, explain(method, tiny, x[i : i + 1]).maps, atol=1e-6, rtol=1e-5)
    assert sum(hook_counts(tiny.model).values()) == 0
    assert all(p.grad is None for p in tiny.model.parameters())


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients", "guided_backprop", "guided_gradcam"])
def test_dead_network_gives_zeros_not_nan(method: str) -> None:
    bb = tiny_backbone()
    with torch.no_grad():
        bb.model.conv1.weight.zero_()
        bb.model.conv1.bias.fill_(-1.0)
        bb.model.conv1.bias[3] = -1.0  # no constant channel: every gradient is 0
    exp = explain(method, bb, tiny_input(2))
    assert torch.isfinite(exp.maps).all() and torch.equal(exp.maps, torch.zeros_like(exp.maps))


def test_cli_style_string_options_are_coerced() -> None:
    ig = create_explainer("integrated_gradients", steps="32", rule="trapezoid", batch_size="8")
    assert ig.config["steps"] == 32 and ig.config["batch_size"] == 8
    sg = create_explainer("smoothgrad", noise="0.2", square="yes")
    assert sg.config["noise"] == 0.2 and sg.config["square"] is True
