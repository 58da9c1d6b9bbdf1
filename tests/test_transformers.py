"""Every CAM on token models: ViT (class token), DeiT, a ViT with register
tokens and Swin (channels-last maps), at the native input size and another one.

The layer's output goes through the backbone's derived reshape (tokens ->
(N,C,h,w) without the class/register tokens; Swin's NHWC -> NCHW). Each model
is also checked against an independent reshape done here by hand from a
hook's capture (prefix tokens dropped, patch grid row-major), so a wrong
prefix count or a transposed grid fails. Random init; the models are built
with ``dynamic_img_size=True`` so one instance runs at both sizes (at the
native size that is the same computation as the static model).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from explainzoo.backbones import create_backbone, hook_counts
from explainzoo.explainers import explain
from explainzoo.explainers.cam import eigen_projection

from .tiny_nets import one_torch_thread

#: name -> (native size, another size, patch stride, prefix tokens, layout)
MODELS = {
    "timm:vit_tiny_patch16_224": ((224, 224), (160, 192), 16, 1, "tokens"),
    "timm:deit_tiny_patch16_224": ((224, 224), (192, 176), 16, 1, "tokens"),
    "timm:vit_little_patch16_reg4_gap_256": ((256, 256), (160, 224), 16, 4, "tokens"),
    "timm:swin_tiny_patch4_window7_224": ((224, 224), (192, 256), 32, 0, "nhwc"),
}
CAMS = ["gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam"]
FAST_OPTIONS = {"scorecam": {"max_channels": 8}, "ablationcam": {"batch_size": 1024}}

_built: dict[str, object] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    yield from one_torch_thread()


def backbone(name: str):
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = create_backbone(name, dynamic_img_size=True)
    return _built[name]


def _input(hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(seed))


def by_hand(bb, x: torch.Tensor, layer: str, stride: int, prefix: int, layout: str):
    """(A (1,C,h,w), dS/dA, target) with our own hook and our own reshape."""
    store = {}

    def keep(mod, args, out) -> None:
        store["out"] = out

    h, w = x.shape[-2] // stride, x.shape[-1] // stride
    handle = bb.module(layer).register_forward_hook(keep)
    try:
        bb.model.eval()
        with torch.enable_grad():
            logits = bb.model(x)
            t = int(logits.argmax())
            (g,) = torch.autograd.grad(logits[0, t], store["out"])
    finally:
        handle.remove()
    out = store["out"].detach()

    def grid(v: torch.Tensor) -> torch.Tensor:
        if layout == "nhwc":
            return v.permute(0, 3, 1, 2)
        patches = v[:, prefix:, :]
        assert patches.shape[1] == h * w
        return patches.reshape(1, h, w, -1).permute(0, 3, 1, 2)

    return grid(out), grid(g), t


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("which", ["native", "other"])
def test_every_cam_runs_on_token_models(name: str, which: str) -> None:
    native, other, stride, prefix, layout = MODELS[name]
    bb = backbone(name)
    hw = native if which == "native" else other
    x = _input(hw)
    with torch.no_grad():
        top = int(bb.model.eval()(x).argmax())
    for method in CAMS:
        exp = explain(method, bb, x, **FAST_OPTIONS.get(method, {}))
        assert exp.raw.shape == (1, hw[0] // stride, hw[1] // stride), method
        assert exp.maps.shape == (1, *hw) and torch.isfinite(exp.maps).all(), method
        assert float(exp.maps.min()) >= 0 and float(exp.maps.max()) <= 1, method
        assert int(exp.targets[0]) == top, method
    assert sum(hook_counts(bb.model).values()) == 0


@pytest.mark.parametrize("name", list(MODELS))
def test_token_reshape_matches_an_independent_one(name: str) -> None:
    """HiResCAM, Layer-CAM and Eigen-CAM at the non-native size equal the formulas
    on tokens reshaped here by hand."""
    native, other, stride, prefix, layout = MODELS[name]
    bb = backbone(name)
    x = _input(other, seed=1)
    layer = bb.layers["last"]
    A, G, t = by_hand(bb, x, layer, stride, prefix, layout)
    assert bb.module(layer) is not None and (G != 0).any()  # the default layer gets a gradient
    expected = {
        "hirescam": (G * A).sum(1).clamp(min=0),
        "layercam": (G.clamp(min=0) * A).sum(1).clamp(min=0),
        "eigencam": eigen_projection(A).clamp(min=0),
    }
    for method, ref in expected.items():
        exp = explain(method, bb, x, target=t)
        scale = float(ref.abs().max()) or 1.0
        torch.testing.assert_close(exp.raw / scale, ref / scale, atol=2e-4, rtol=1e-3, msg=method)
    assert expected["hirescam"].max() > 0


def test_default_layer_of_class_token_vit_gets_gradient() -> None:
    """With class-token pooling only the class token of the final norm reaches the
    head: the final norm's patch tokens get no gradient, the last block's norm1 does."""
    bb = backbone("timm:vit_tiny_patch16_224")
    assert bb.layers["last"] == "blocks.11.norm1"
    x = _input((224, 224), seed=2)
    _, G_norm, _ = by_hand(bb, x, "norm", 16, 1, "tokens")
    assert torch.count_nonzero(G_norm) == 0
    assert explain("gradcam", bb, x, layer="norm").maps.max() == 0  # zeros, not NaN
    assert explain("gradcam", bb, x).maps.max() == 1


@pytest.mark.parametrize("name", ["timm:vit_tiny_patch16_224", "timm:vit_little_patch16_reg4_gap_256"])
def test_eigencam_sign_on_tokens(name: str) -> None:
    """Token activations are signed: the map still correlates positively with the
    channel-mean activation."""
    native, other, stride, prefix, layout = MODELS[name]
    bb = backbone(name)
    x = _input(native, seed=3)
    A, _, _ = by_hand(bb, x, bb.layers["last"], stride, prefix, layout)
    assert (A < 0).any()
    proj = eigen_projection(A)[0]
    mean = A[0].mean(0)
    assert float(((proj - proj.mean()) * (mean - mean.mean())).sum()) > 0


def test_ablationcam_shortcut_is_exact_on_a_vit() -> None:
    """Above blocks.11.norm1 the residual stream (batch 1) rejoins the ablated rows."""
    bb = backbone("timm:vit_tiny_patch16_224")
    x = _input((64, 80), seed=4)
    fast = explain("ablationcam", bb, x, batch_size=1024)
    slow = explain("ablationcam", bb, x, batch_size=1024, trunk_once=False)
    torch.testing.assert_close(fast.raw, slow.raw, atol=1e-5, rtol=1e-4)
    assert fast.raw.max() > 0


def test_ablation_only_touches_patch_tokens() -> None:
    """Ablating a channel of the map leaves the register tokens as they were: the
    weights equal those of a hand-written ablation of the patch tokens only."""
    name = "timm:vit_little_patch16_reg4_gap_256"
    native, other, stride, prefix, layout = MODELS[name]
    bb = backbone(name)
    x = _input((64, 64), seed=5)
    layer = bb.layers["last"]
    A, _, t = by_hand(bb, x, layer, stride, prefix, layout)
    module = bb.module(layer)
    store = {}

    def keep(mod, args, out) -> None:
        store["out"] = out.detach().clone()

    handle = module.register_forward_hook(keep)
    try:
        with torch.no_grad():
            y = float(bb.model(x)[0, t])
    finally:
        handle.remove()
    out = store["out"]
    c = out.shape[-1]
    ablated = out.repeat(c, 1, 1)  # row k: channel k of the patch tokens zeroed
    for k in range(c):
        ablated[k, prefix:, k] = 0

    def swap(mod, args, o):
        return ablated

    handle = module.register_forward_hook(swap)
    try:
        with torch.no_grad():
            yk = bb.model(x.repeat(c, 1, 1, 1))[:, t]
    finally:
        handle.remove()
    weights = (y - yk) / abs(y)
    expected = (weights.view(1, -1, 1, 1) * A).sum(1).clamp(min=0)
    exp = explain("ablationcam", bb, x, target=t, batch_size=1024)
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(exp.raw / scale, expected / scale, atol=1e-4, rtol=1e-3)
