"""Golden values and mechanics of the perturbation methods.

References run the model once per perturbed copy, in float64, with no
batching and no explainzoo code; the explainers batch, chunk and skip work,
and must still agree. Forward-pass counts check that the skipped work is
really skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainzoo.backbones import Backbone, Preprocessing, hook_counts
from explainzoo.explainers import create_explainer, explain
from explainzoo.explainers.mechanics import chunks, minmax_per_map

from .tiny_nets import (
    LABELS,
    TinyNet,
    act_and_grad,
    head_logits,
    logits64,
    one_torch_thread,
    tiny_backbone,
    tiny_input,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone()


class RowCounter:
    """Counts the images the model's forward passes see (a hook the test owns)."""

    def __init__(self, model: nn.Module) -> None:
        self.rows: list[int] = []
        self.handle = model.register_forward_pre_hook(lambda m, args: self.rows.append(args[0].shape[0]))

    def close(self) -> None:
        self.handle.remove()


# -- Score-CAM -------------------------------------------------------------------------


def ref_scorecam(model: TinyNet, x: torch.Tensor, target: int, channels=None) -> np.ndarray:
    A, _, _ = act_and_grad(model, x[None])
    A = A[0]
    cam = torch.zeros(8, 8, dtype=torch.float64)
    for k in range(A.shape[0]) if channels is None else channels:
        up = F.interpolate(A[k][None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
        lo, hi = up.min(), up.max()
        mask = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
        p = logits64(model, (x.double() * mask)[None]).softmax(1)[0, target]
        cam += p * A[k]
    return cam.clamp(min=0).numpy()


def test_scorecam_golden_all_channels(tiny) -> None:
    x = tiny_input(2)
    exp = explain("scorecam", tiny, x, max_channels=0)
    for i in range(2):
        t = int(exp.targets[i])
        np.testing.assert_allclose(exp.raw[i].numpy(), ref_scorecam(tiny.model, x[i], t), atol=1e-5, rtol=1e-4)


def test_scorecam_channel_softmax_weights_as_the_libraries(tiny) -> None:
    """weights=channel_softmax: softmax over all channels of the masked logit (pytorch-grad-cam's)."""
    x = tiny_input(2)
    exp = explain("scorecam", tiny, x, max_channels=0, weights="channel_softmax")
    for i in range(2):
        t = int(exp.targets[i])
        A, _, _ = act_and_grad(tiny.model, x[i : i + 1])
        logits = []
        for k in range(A.shape[1]):  # every channel, the dead one included, as the libraries do
            up = F.interpolate(A[0, k][None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
            lo, hi = up.min(), up.max()
            mask = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
            logits.append(logits64(tiny.model, (x[i].double() * mask)[None])[0, t])
        w = torch.stack(logits).softmax(0)
        cam = (w[:, None, None] * A[0]).sum(0).clamp(min=0)
        ours = exp.maps[i].double()
        ref = F.interpolate(cam[None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
        np.testing.assert_allclose(ours.numpy(), (ref / ref.max()).numpy(), atol=1e-5)
    probability = explain("scorecam", tiny, x, max_channels=0)
    assert not torch.allclose(probability.maps, exp.maps, atol=1e-3)  # a different weighting


def test_scorecam_max_channels_keeps_the_most_varying(tiny) -> None:
    x = tiny_input(1)
    A, _, _ = act_and_grad(tiny.model, x)
    var = A[0].flatten(1).var(1, unbiased=False)
    top = int(var.argmax())  # channel 2 (dead) and 3 (constant) have variance 0
    exp = explain("scorecam", tiny, x, max_channels=1)
    # the constant channel 3 (0.5 everywhere) still counts: its mask is 0, scored once
    expected = ref_scorecam(tiny.model, x[0], int(exp.targets[0]), channels=[top, 3])
    np.testing.assert_allclose(exp.raw[0].numpy(), expected, atol=1e-5, rtol=1e-4)


def test_scorecam_scores_constant_channels_once_and_dead_ones_never(tiny) -> None:
    """4 channels: 2 vary, 1 is constant 0.5, 1 is all zero -> 2 + 1 masked passes."""
    x = tiny_input(1)
    counter = RowCounter(tiny.model)
    try:
        explain("scorecam", tiny, x, max_channels=0, batch_size=1)
    finally:
        counter.close()
    assert counter.rows == [1, 1, 1, 1]  # the plain pass, 2 varying channels, the constant ones


def test_scorecam_batch_size_does_not_change_the_map(tiny) -> None:
    x = tiny_input(2)
    a = explain("scorecam", tiny, x, max_channels=0, batch_size=1)
    b = explain("scorecam", tiny, x, max_channels=0, batch_size=64)
    torch.testing.assert_close(a.raw, b.raw, atol=1e-6, rtol=1e-5)


# -- Ablation-CAM ----------------------------------------------------------------------


def ref_ablationcam(model: TinyNet, x: torch.Tensor, target: int) -> np.ndarray:
    A, _, _ = act_and_grad(model, x[None])
    y = float(head_logits(model, A)[0, target])
    cam = torch.zeros(8, 8, dtype=torch.float64)
    for k in range(A.shape[1]):
        ablated = A.clone()
        ablated[0, k] = 0
        yk = float(head_logits(model, ablated)[0, target])
        cam += (y - yk) / abs(y) * A[0, k]
    return cam.clamp(min=0).numpy()


@pytest.mark.parametrize("trunk_once", [True, False])
def test_ablationcam_golden(tiny, trunk_once: bool) -> None:
    x = tiny_input(2)
    exp = explain("ablationcam", tiny, x, trunk_once=trunk_once, batch_size=3)
    for i in range(2):
        expected = ref_ablationcam(tiny.model, x[i], int(exp.targets[i]))
        assert expected.max() > 0
        np.testing.assert_allclose(exp.raw[i].numpy(), expected, atol=1e-5, rtol=1e-4)


def test_ablationcam_negative_score_divides_by_its_magnitude(tiny) -> None:
    """Class 2 has a negative logit here: the weights keep 'the score dropped' positive."""
    x = tiny_input(1)
    assert float(logits64(tiny.model, x)[0, 2]) < 0
    exp = explain("ablationcam", tiny, x, target=2)
    np.testing.assert_allclose(exp.raw[0].numpy(), ref_ablationcam(tiny.model, x[0], 2), atol=1e-5, rtol=1e-4)


def test_ablationcam_runs_the_trunk_once_per_chunk(tiny) -> None:
    """Channel 2 is all zero (no pass); 3 live channels + the unablated row in chunks
    of 2: the trunk sees 1 image per chunk and the hook hands up 3 and 2 rows."""
    x = tiny_input(1)
    counter = RowCounter(tiny.model)
    try:
        explain("ablationcam", tiny, x, batch_size=2)
    finally:
        counter.close()
    assert counter.rows == [1, 1, 1]  # the plain capture pass + one trunk pass per chunk


class BatchFromInput(nn.Module):
    """Reads the batch size from the input and reshapes with it above act1:
    the trunk-once shortcut breaks here and the explainer must fall back."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.inner = TinyNet()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        a = self.inner.act1(self.inner.conv1(x))
        h = self.inner.act2(self.inner.conv2(a))
        if self.mode == "error":  # (1, K*C) into fc(3 -> 3): a shape error
            return self.inner.fc(self.inner.pool(h).reshape(b, -1))
        # "rows": silently wrong shape (1, classes) unless caught
        return self.inner.fc(h.reshape(b, 3, -1).mean(-1))


@pytest.mark.parametrize("mode", ["error", "rows"])
def test_ablationcam_falls_back_when_the_shortcut_does_not_hold(mode: str) -> None:
    model = BatchFromInput(mode).eval()
    bb = Backbone("batchy", model, Preprocessing(input_size=(8, 8)), list(LABELS), aliases={"last": "inner.act1"})
    x = tiny_input(1)
    exp = explain("ablationcam", bb, x, batch_size=8)
    expected = ref_ablationcam(model.inner, x[0], int(exp.targets[0]))
    np.testing.assert_allclose(exp.raw[0].numpy(), expected, atol=1e-5, rtol=1e-4)
    assert sum(hook_counts(model).values()) == 0


def test_ablationcam_trunk_once_matches_full_passes_on_a_resnet() -> None:
    """Skip connections rejoin the ablated rows by broadcasting: still exact."""
    from explainzoo.backbones import create_backbone

    torch.manual_seed(0)
    bb = create_backbone("timm:resnet18")
    with torch.no_grad():  # timm zero-inits each block's last BN gamma: undo it
        for m in bb.model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    # bn2 of a block: its output gets the block's shortcut (computed below the
    # layer, batch 1) added in place, then layer4's blocks run on the rows
    layer = "layer3.1.bn2"
    assert bb.layer_format(layer).layout == "nchw"  # runs the backbone's probe pass now
    counter = RowCounter(bb.model)
    try:
        fast = explain("ablationcam", bb, x, layer=layer, batch_size=512)
    finally:
        counter.close()
    assert counter.rows == [1, 1]  # the capture pass, then the trunk once: the shortcut held
    slow = explain("ablationcam", bb, x, layer=layer, batch_size=512, trunk_once=False)
    torch.testing.assert_close(fast.raw, slow.raw, atol=1e-5, rtol=1e-4)
    assert fast.raw.max() > 0


# -- Occlusion -------------------------------------------------------------------------


def ref_occlusion(model, x: torch.Tensor, target: int, size: int, starts: list[int], softmax: bool):
    def score(inp):
        out = logits64(model, inp[None])
        return float((out.softmax(1) if softmax else out)[0, target])

    base = score(x)
    total = np.zeros((8, 8))
    count = np.zeros((8, 8))
    for t in starts:
        for l in starts:  # noqa: E741
            occ = x.clone()
            occ[:, t : t + size, l : l + size] = 0
            total[t : t + size, l : l + size] += base - score(occ)
            count[t : t + size, l : l + size] += 1
    return total / count


@pytest.mark.parametrize(("window", "stride", "starts"), [(4, 2, [0, 2, 4]), (3, 2, [0, 2, 4, 5])])
@pytest.mark.parametrize("score", ["probability", "logit"])
def test_occlusion_golden(tiny, window: int, stride: int, starts: list[int], score: str) -> None:
    x = tiny_input(2)
    exp = explain("occlusion", tiny, x, window=window, stride=stride, score=score, batch_size=5)
    for i in range(2):
        expected = ref_occlusion(tiny.model, x[i], int(exp.targets[i]), window, starts, score == "probability")
        np.testing.assert_allclose(exp.raw[i].numpy(), expected, atol=1e-5, rtol=1e-4)


def test_occlusion_default_window_is_a_six_by_six_grid() -> None:
    occ = create_explainer("occlusion")
    wh, ww, corners = occ.windows((224, 224))
    assert (wh, ww) == (64, 64) and len(corners) == 36
    assert {t for t, _ in corners} == {0, 32, 64, 96, 128, 160}


def test_occlusion_skips_windows_that_change_nothing(tiny) -> None:
    x = tiny_input(1)
    x[:, :, :4, :4] = 0.0  # already the 'mean' baseline in the top-left window
    counter = RowCounter(tiny.model)
    try:
        exp = explain("occlusion", tiny, x, window=4, stride=4, batch_size=100)
    finally:
        counter.close()
    assert counter.rows == [1, 3]  # the plain pass, then 3 of the 4 windows
    assert torch.all(exp.raw[0, :4, :4] == 0)


def test_occlusion_black_baseline_fills_with_normalised_black(tiny) -> None:
    x = tiny_input(1)
    exp = explain("occlusion", tiny, x, window=8, stride=8, baseline="black", score="logit")
    black = ((0 - torch.tensor(tiny.preprocessing.mean)) / torch.tensor(tiny.preprocessing.std)).view(3, 1, 1)
    t = int(exp.targets[0])
    expected = float(logits64(tiny.model, x)[0, t] - logits64(tiny.model, black.expand(1, 3, 8, 8))[0, t])
    torch.testing.assert_close(exp.raw[0], torch.full((8, 8), expected, dtype=torch.float32), atol=1e-5, rtol=1e-4)


# -- RISE ------------------------------------------------------------------------------


def test_rise_golden_given_its_masks(tiny) -> None:
    x = tiny_input(2)
    rise = create_explainer("rise", masks=20, cells=3, p=0.4, seed=7, batch_size=6, center=False)
    exp = rise.explain(tiny, x)
    centred = explain("rise", tiny, x, masks=20, cells=3, p=0.4, seed=7)
    torch.testing.assert_close(centred.raw, exp.raw - exp.raw.mean(dim=(1, 2), keepdim=True))
    assert (centred.raw < 0).any()  # signed: the [0,1] map is S min-max scaled
    torch.testing.assert_close(centred.maps, (exp.raw - exp.raw.amin((1, 2), keepdim=True))
                               / (exp.raw.amax((1, 2), keepdim=True) - exp.raw.amin((1, 2), keepdim=True)))
    masks = rise.masks((8, 8), 0, 20, rise.draw((8, 8))).double()
    for i in range(2):
        t = int(exp.targets[i])
        sal = torch.zeros(8, 8, dtype=torch.float64)
        for m in masks:
            sal += logits64(tiny.model, (x[i].double() * m)[None]).softmax(1)[0, t] * m
        np.testing.assert_allclose(exp.raw[i].numpy(), (sal / (20 * 0.4)).numpy(), atol=1e-6, rtol=1e-4)


def test_rise_masks_follow_the_paper() -> None:
    rise = create_explainer("rise", masks=400, cells=4, p=0.3, seed=1)
    hw = (30, 22)
    grids, offsets = rise.draw(hw)
    masks = rise.masks(hw, 0, 400, (grids, offsets))
    assert masks.shape == (400, 30, 22)
    assert masks.min() >= 0 and masks.max() <= 1
    ch, cw = math.ceil(30 / 4), math.ceil(22 / 4)
    assert int(offsets[:, 0].max()) < ch and int(offsets[:, 1].max()) < cw
    assert abs(float(grids.mean()) - 0.3) < 0.03
    assert abs(float(masks.mean()) - 0.3) < 0.05
    # one mask by hand: the upsampled grid, cropped at its offset
    up = F.interpolate(grids[:1, None], size=(5 * ch, 5 * cw), mode="bilinear", align_corners=False)[0, 0]
    dy, dx = offsets[0].tolist()
    torch.testing.assert_close(masks[0], up[dy : dy + 30, dx : dx + 22].clamp(0, 1))


def test_rise_with_p_one_is_the_probability_everywhere(tiny) -> None:
    """Every mask keeps every cell: S = f(x) * N / (N p) = f(x)."""
    x = tiny_input(1)
    exp = explain("rise", tiny, x, masks=5, p=1.0, center=False)
    p = float(logits64(tiny.model, x).softmax(1)[0, int(exp.targets[0])])
    torch.testing.assert_close(exp.raw[0], torch.full((8, 8), p), atol=1e-6, rtol=1e-5)


def test_rise_is_seeded_and_independent_of_batching(tiny) -> None:
    x = tiny_input(3)
    a = explain("rise", tiny, x, masks=30, batch_size=4)
    b = explain("rise", tiny, x, masks=30, batch_size=30)
    torch.testing.assert_close(a.raw, b.raw, atol=1e-6, rtol=1e-5)
    single = explain("rise", tiny, x[2:3], masks=30)
    torch.testing.assert_close(a[2].raw, single.raw, atol=1e-6, rtol=1e-5)
    other = explain("rise", tiny, x, masks=30, seed=1)
    assert not torch.allclose(a.raw, other.raw)


# -- shared ----------------------------------------------------------------------------


def test_chunks_cover_everything_once() -> None:
    assert list(chunks(7, 3)) == [(0, 3), (3, 6), (6, 7)]
    assert list(chunks(0, 3)) == []


def test_minmax01_constant_maps_are_zero() -> None:
    maps = torch.stack([torch.full((2, 2), 3.0), torch.tensor([[1.0, 3.0], [2.0, 5.0]])])
    out = minmax_per_map(maps)
    torch.testing.assert_close(out[0], torch.zeros(2, 2))
    torch.testing.assert_close(out[1], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "occlusion"])
def test_dead_network_gives_zeros_not_nan(method: str) -> None:
    bb = tiny_backbone()
    with torch.no_grad():
        bb.model.conv1.weight.zero_()
        bb.model.conv1.bias.fill_(-1.0)
    exp = explain(method, bb, tiny_input(2), window=4, stride=4) if method == "occlusion" \
        else explain(method, bb, tiny_input(2))
    assert torch.isfinite(exp.maps).all() and torch.equal(exp.maps, torch.zeros_like(exp.maps))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "occlusion", "rise"])
def test_perturbation_batch_equals_single(tiny, method: str) -> None:
    x = tiny_input(3)
    batch = explain(method, tiny, x)
    for i in range(3):
        torch.testing.assert_close(batch[i].maps, explain(method, tiny, x[i : i + 1]).maps, atol=1e-6, rtol=1e-5)
