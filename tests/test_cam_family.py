"""Golden values for the gradient CAMs and Eigen-CAM on a hand-weighted net.

Each reference is an independent, loop-by-loop float64 implementation of the
paper's formula on A and dS/dA computed by hand (tests/tiny_nets.py), compared
with the explainer's raw map (before upsampling and normalisation).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from explainzoo.backbones import hook_counts
from explainzoo.explainers import create_explainer, explain
from explainzoo.explainers.cam import eigen_projection

from .tiny_nets import act_and_grad, one_torch_thread, tiny_backbone, tiny_input

GRADIENT_CAMS = ["gradcam_pp", "xgradcam", "layercam", "hirescam"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    yield from one_torch_thread()


def ref_gradcam_pp(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    C, H, W = A.shape
    cam = np.zeros((H, W))
    for c in range(C):
        s = A[c].sum()
        w = 0.0
        for i in range(H):
            for j in range(W):
                g = G[c, i, j]
                den = 2 * g**2 + s * g**3
                alpha = g**2 / den if den != 0 else 0.0
                w += alpha * max(g, 0.0)
        cam += w * A[c]
    return np.maximum(cam, 0)


def ref_xgradcam(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    cam = np.zeros(A.shape[1:])
    for c in range(A.shape[0]):
        s = A[c].sum()
        w = (A[c] * G[c]).sum() / s if s != 0 else 0.0
        cam += w * A[c]
    return np.maximum(cam, 0)


def ref_layercam(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    return np.maximum(sum(np.maximum(G[c], 0) * A[c] for c in range(A.shape[0])), 0)


def ref_hirescam(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    return np.maximum(sum(G[c] * A[c] for c in range(A.shape[0])), 0)


def ref_eigencam(A: np.ndarray) -> np.ndarray:
    C, H, W = A.shape
    M = A.reshape(C, H * W).T
    _, _, vt = np.linalg.svd(M, full_matrices=False)
    p = M @ vt[0]
    mean = A.mean(axis=0).reshape(-1)
    if np.corrcoef(p, mean)[0, 1] < 0:
        p = -p
    return np.maximum(p, 0).reshape(H, W)


REFS = {
    "gradcam_pp": ref_gradcam_pp,
    "xgradcam": ref_xgradcam,
    "layercam": ref_layercam,
    "hirescam": ref_hirescam,
}


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone()


@pytest.mark.parametrize("method", GRADIENT_CAMS)
@pytest.mark.parametrize("target", [None, 0, 2])
def test_gradient_cam_golden(tiny, method: str, target) -> None:
    x = tiny_input(2)
    exp = explain(method, tiny, x, target=target)
    t = None if target is None else torch.full((2,), target)
    A, G, targets = act_and_grad(tiny.model, x, t)
    assert exp.layer == "act1" and exp.raw.shape == (2, 8, 8)
    torch.testing.assert_close(exp.targets, targets)
    for i in range(2):
        expected = REFS[method](A[i].numpy(), G[i].numpy())
        assert expected.max() > 0  # a real map, not a trivially zero one
        np.testing.assert_allclose(exp.raw[i].numpy(), expected, atol=1e-5, rtol=1e-4)


def test_gradient_cams_differ_from_gradcam(tiny) -> None:
    """The spatially varying gradient makes each variant a different map."""
    x = tiny_input(1)
    maps = {m: explain(m, tiny, x).raw for m in ["gradcam", *GRADIENT_CAMS]}
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(maps[a], maps[b], atol=1e-4), (a, b)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "xgradcam"])
def test_gap_linear_head_equals_cam_by_hand(tiny, method: str) -> None:
    """Above act2 there is only pool + fc: dS/dA = w_t / (h w) everywhere, so Grad-CAM,
    HiResCAM and XGrad-CAM all give CAM = ReLU(sum_c w_tc A_c) / (h w)."""
    x = tiny_input(1)
    m = tiny.model
    with torch.no_grad():
        a2 = torch.relu(m.conv2(m.act1(m.conv1(x))))
        t = int(m(x).argmax())
        expected = torch.relu(torch.einsum("c,chw->hw", m.fc.weight[t], a2[0]) / 64)
    exp = explain(method, tiny, x, layer="act2")
    torch.testing.assert_close(exp.raw[0], expected, atol=1e-6, rtol=1e-5)


def test_eigencam_golden(tiny) -> None:
    x = tiny_input(2)
    A, _, _ = act_and_grad(tiny.model, x)
    exp = explain("eigencam", tiny, x, target=2)
    for i in range(2):
        np.testing.assert_allclose(exp.raw[i].numpy(), ref_eigencam(A[i].numpy()), atol=1e-5, rtol=1e-4)
    # class-agnostic: another target, the same map
    torch.testing.assert_close(explain("eigencam", tiny, x, target=0).raw, exp.raw)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_eigen_projection_rank_one_by_hand(sign: float) -> None:
    """A_c = v_c m: the first principal direction is v/|v|, the map |v| m, oriented
    so that it correlates positively with the channel mean (mean(v) m)."""
    v = sign * torch.tensor([1.0, 2.0, 2.0])  # |v| = 3
    m = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    A = (v[:, None, None] * m)[None]
    expected = sign * 3 * m
    torch.testing.assert_close(eigen_projection(A)[0], expected, atol=1e-5, rtol=1e-5)


def test_eigen_projection_sign_follows_mean_activation() -> None:
    g = torch.Generator().manual_seed(5)
    for _ in range(10):
        A = torch.randn(2, 16, 6, 6, generator=g) + torch.randn(2, 16, 1, 1, generator=g)
        proj = eigen_projection(A)
        for p, a in zip(proj, A):
            mean = a.mean(0)
            corr = ((p - p.mean()) * (mean - mean.mean())).sum()
            assert corr >= 0
            # flipping the activations' sign flips the mean: the map follows it
            flipped = eigen_projection(-a[None])[0]
            corr_f = ((flipped - flipped.mean()) * (-mean + mean.mean())).sum()
            assert corr_f >= 0


def test_eigencam_center_option(tiny) -> None:
    x = tiny_input(1)
    A, _, _ = act_and_grad(tiny.model, x)
    M = A[0].numpy().reshape(4, -1).T
    M = M - M.mean(0)
    _, _, vt = np.linalg.svd(M)
    p = M @ vt[0]
    if np.corrcoef(p, A[0].numpy().mean(0).reshape(-1))[0, 1] < 0:
        p = -p
    exp = explain("eigencam", tiny, x, center="true")  # options arrive as CLI strings too
    np.testing.assert_allclose(exp.raw[0].numpy(), np.maximum(p, 0).reshape(8, 8), atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam"])
def test_batch_equals_single_and_no_hooks(tiny, method: str) -> None:
    x = tiny_input(3)
    batch = explain(method, tiny, x)
    for i in range(3):
        single = explain(method, tiny, x[i : i + 1])
        torch.testing.assert_close(batch[i].maps, single.maps, atol=1e-6, rtol=1e-5)
    assert sum(hook_counts(tiny.model).values()) == 0


@pytest.mark.parametrize("method", ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam"])
def test_dead_layer_gives_zeros_not_nan(method: str) -> None:
    bb = tiny_backbone()
    with torch.no_grad():
        bb.model.conv1.weight.zero_()
        bb.model.conv1.bias.fill_(-1.0)  # every activation of act1 is 0
    exp = explain(method, bb, tiny_input(2))
    assert torch.isfinite(exp.maps).all() and torch.equal(exp.maps, torch.zeros_like(exp.maps))


def test_cams_run_on_any_resolved_layer(vgg) -> None:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for method in ["gradcam_pp", "layercam", "eigencam"]:
        exp = explain(method, vgg, x, layer="stage3")
        assert exp.layer == "backbone.bn3_2" and exp.raw.shape == (1, 16, 16)
        assert exp.maps.shape == (1, 64, 64) and torch.isfinite(exp.maps).all()


def test_cam_in_place_relu_downstream_does_not_corrupt(vgg) -> None:
    """vgg11_ref applies F.relu(inplace=True) right after bn5_2: the captured
    activations must be bn5_2's output as produced (negative values kept)."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    m = vgg.model
    with torch.no_grad():
        feats: dict[str, torch.Tensor] = {}

        def keep(mod, args, out) -> None:
            feats["A"] = out.clone()

        h = m.backbone.bn5_2.register_forward_hook(keep)
        try:
            m.eval()
            m(x)
        finally:
            h.remove()
    A = feats["A"][0]
    assert (A < 0).any()
    exp = explain("eigencam", vgg, x)
    np.testing.assert_allclose(exp.raw[0].numpy(), ref_eigencam(A.double().numpy()), atol=1e-4, rtol=1e-3)


def test_options_are_validated() -> None:
    from explainzoo.backbones import ExplainzooError

    with pytest.raises(ExplainzooError, match="center"):
        create_explainer("eigencam", centre=True)
    with pytest.raises(ExplainzooError, match="must be a bool"):
        create_explainer("eigencam", center="maybe")
