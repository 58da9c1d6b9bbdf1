"""Methods that score many perturbed forward passes: Score-CAM, Ablation-CAM,
Occlusion and RISE.

All of them run their extra forward passes under ``torch.inference_mode`` in
chunks of ``batch_size`` copies (see :mod:`explainzoo.explainers.perturb`), one
image at a time, so memory is bounded and ``explain(batch)[i]`` equals
``explain(x_i)``. Work whose result is known exactly is skipped: Score-CAM
scores all constant channels with one pass, Ablation-CAM gives all-zero
channels weight 0 without a pass and runs the layers below its target once
per chunk, Occlusion does not run windows that change nothing.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import ExplainzooError, remove_hook

from .base import AttributionExplainer, CAMExplainer, Context, Option
from .capture import capture, gather_scores, upsample
from .perturb import (
    batch_option,
    chunked_masked_scores,
    chunks,
    fill_option,
    fill_value,
    forward_logits,
    generator,
    masked_scores,
    minmax01,
    seed_option,
    target_scores,
)

_SCORE_OPTION = Option(
    "probability",
    "score of a perturbed copy: the target's softmax 'probability' (the paper's) or its 'logit'",
    choices=("probability", "logit"),
)


class ChannelWeightCAM(CAMExplainer):
    """A CAM whose channel weights come from extra forward passes.

    ``attribute`` captures the layer's output once (in the layer's own
    layout, e.g. tokens) with the logits, asks :meth:`channel_weights` for
    (N,C) weights and returns ``ReLU(sum_c w_c A_c)`` through :meth:`combine`
    (which receives the weights, shaped (N,C,1,1), in place of gradients).
    """

    needs_gradient = False

    @abc.abstractmethod
    def channel_weights(
        self, ctx: Context, out: Tensor, A: Tensor, logits: Tensor, targets: Tensor
    ) -> Tensor:
        """(N,C) weights from the layer output ``out`` (native layout), A = its
        (N,C,h,w) map, the logits of the plain forward pass and the targets."""

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        assert G is not None  # the channel weights, (N,C,1,1)
        return (G * A).sum(dim=1)

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        x = ctx.require_x()
        path = ctx.layer or ""
        out, logits = capture(ctx.model, ctx.backbone.module(path), x, path=path)
        assert logits is not None
        A = ctx.to_map(out)
        targets = ctx.targets(logits)
        scores = gather_scores(logits, targets)
        weights = self.channel_weights(ctx, out, A, logits, targets)
        cam = self.combine(A, weights[:, :, None, None].to(A.dtype), ctx)
        return cam.clamp(min=0), targets, scores


class ScoreCAM(ChannelWeightCAM):
    """Score-CAM: channels weighted by the score of the image they unmask.

    Wang et al., Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks, CVPR-W 2020 (https://arxiv.org/abs/1910.01279).
    Each channel's map, upsampled to the input and min-max scaled to [0,1],
    masks the image; with p_c the target's softmax probability::

        H_k = minmax(Upsample(A_k)),  w_k = p_c(X * H_k),  map = ReLU(sum_k w_k A_k)

    Deviations, for speed (documented defaults, exact with ``max_channels=0``):

    * ``max_channels`` (default 32) keeps the channels whose activations vary
      most over space (the selection of the "Faster Score-CAM" variant); the
      others get weight 0. On EfficientNet-Lite0's last layer (1280
      channels; 817 all zero for skimage's cat, skipped) scoring the other
      463 takes ~25 s on a 2-core CPU; the default 32 take ~1 s and give a
      map with Pearson r = 0.97 to the full one (0.99 with 64, 0.998 with 128).
    * Every constant channel has the mask H = 0 (min-max of a constant), so one
      forward pass scores them all; all-zero constant channels need none.
    * The paper's "increase of confidence" subtracts the baseline score
      p_c(X_b), a constant shared by all channels; like the authors' code we
      use p_c(X * H_k) itself.

    ``weights=channel_softmax`` weights the channels as pytorch-grad-cam and
    torchcam do instead: a softmax over the channels of the target's logit
    y_c(X * H_k). Computed as exp(y_k - max_k y_k) over the scored channels:
    the softmax's denominator (and the unscored all-zero channels it would
    include) scales every weight of an image alike, which the normalisation
    removes, so the map is theirs.

    ``baseline`` sets what masked-out pixels become (``mean``: X * H exactly).
    """

    description = "Score-CAM: channels weighted by the class probability of the image they unmask"
    paper = "Wang et al., Score-CAM, CVPR Workshops 2020 (arXiv:1910.01279)"
    options = {
        "max_channels": Option(32, "score only the K channels with the largest spatial variance (0: all)",
                               low=0, high=1 << 20),
        "batch_size": batch_option(8),
        "baseline": fill_option("mean"),
        "weights": Option("probability",
                          "'probability': the target's softmax probability of the masked image (the paper); "
                          "'channel_softmax': a softmax of its logit over channels (pytorch-grad-cam, torchcam)",
                          choices=("probability", "channel_softmax")),
    }

    def channel_weights(
        self, ctx: Context, out: Tensor, A: Tensor, logits: Tensor, targets: Tensor
    ) -> Tensor:
        probability = self.config["weights"] == "probability"
        x = ctx.require_x()
        hw = ctx.input_hw
        fill = fill_value(ctx.backbone, self.config["baseline"], x)
        k = self.config["max_channels"]
        weights = torch.zeros(A.shape[:2], dtype=torch.float32, device=A.device)
        for i in range(A.shape[0]):
            a = A[i].float()
            flat = a.flatten(1)
            constant = flat.amax(dim=1) == flat.amin(dim=1)
            variance = torch.where(constant, torch.full_like(flat[:, 0], -1.0), flat.var(dim=1, unbiased=False))
            order = variance.argsort(descending=True, stable=True)
            chosen = order[~constant[order]]
            if k:
                chosen = chosen[:k]
            target = int(targets[i])

            def make_masks(start: int, stop: int, a: Tensor = a, chosen: Tensor = chosen) -> Tensor:
                return minmax01(upsample(a[chosen[start:stop]], hw))

            weights[i, chosen] = chunked_masked_scores(
                ctx.model, x[i], make_masks, len(chosen), fill, target,
                self.config["batch_size"], softmax=probability,
            )
            live_constant = constant & (flat[:, 0] != 0)
            if live_constant.any():  # mask H = 0 for all of them: one pass
                zero = torch.zeros(1, *hw, dtype=x.dtype, device=x.device)
                weights[i, live_constant] = masked_scores(ctx.model, x[i], zero, fill, target, softmax=probability)
            if not probability:
                scored = torch.zeros_like(constant)
                scored[chosen] = True
                scored |= live_constant
                if scored.any():
                    y = weights[i, scored]
                    weights[i] = 0
                    weights[i, scored] = (y - y.max()).exp()
        return weights


class AblationCAM(ChannelWeightCAM):
    """Ablation-CAM: channels weighted by the score drop when they are zeroed.

    Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep
    Convolutional Network via Gradient-free Localization, WACV 2020
    (https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.html).
    With y the class logit and y_k the logit when channel k of the layer's
    output is set to zero::

        w_k = (y - y_k) / |y|,    map = ReLU(sum_k w_k A_k)

    The paper divides by y (it assumes a positive score); dividing by |y|
    keeps "the score dropped" positive when a logit is negative (identical
    otherwise; y = 0 divides by 1). For token layers only the patch tokens
    (the map) are ablated, not class or register tokens.

    Efficiency: channels that are all zero get w_k = 0 without a pass. The
    ablated outputs are substituted by a forward hook on the layer, and by
    default the layers below it run once per chunk at batch size 1: the hook
    returns the chunk's ablated copies and only the rest of the network runs
    at the chunk size (exact: that part sees only the substituted tensor,
    broadcast where a skip connection rejoins). Each chunk's first copy is the
    unablated output; if its logits do not match the plain forward pass (or
    the model rejects the batch change) the call falls back to running the
    whole model on ``batch_size`` copies of the image. ``trunk_once=false``
    forces that.
    """

    description = "Ablation-CAM: channels weighted by the class-score drop when each is zeroed"
    paper = "Desai & Ramaswamy, Ablation-CAM, WACV 2020"
    options = {
        "batch_size": batch_option(128),
        "trunk_once": Option(True, "run the layers below the target once per chunk (exact; auto-fallback)"),
    }

    def channel_weights(
        self, ctx: Context, out: Tensor, A: Tensor, logits: Tensor, targets: Tensor
    ) -> Tensor:
        x = ctx.require_x()
        module = ctx.backbone.module(ctx.layer or "")
        # Native position of every map element: ablating channel k of the map
        # zeroes these positions of the layer's own output (any layout).
        n, c = A.shape[:2]
        index = ctx.to_map(torch.arange(out[:1].numel(), device=out.device).view_as(out[:1]))[0]
        positions = index.reshape(c, -1)
        weights = torch.zeros(n, c, dtype=torch.float32, device=A.device)
        trunk_once = self.config["trunk_once"]
        for i in range(n):
            live = torch.nonzero(A[i].flatten(1).ne(0).any(dim=1))[:, 0]
            drops, trunk_once = _ablation_drops(
                ctx.model, module, x[i : i + 1], out[i : i + 1], positions, live,
                logits[i], int(targets[i]), self.config["batch_size"], trunk_once,
            )
            y = float(logits[i, targets[i]])
            weights[i, live] = drops / (abs(y) if y != 0 else 1.0)
        return weights


def _ablation_drops(
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    out: Tensor,
    positions: Tensor,
    channels: Tensor,
    reference: Tensor,
    target: int,
    batch_size: int,
    trunk_once: bool,
) -> tuple[Tensor, bool]:
    """(y - y_k for each of ``channels``, whether the trunk-once shortcut held).

    ``out`` (1, ...) is the layer's output for ``x`` (1,3,H,W) in its own
    layout, ``positions`` (C, h*w) the flat indices of each channel in it and
    ``reference`` the logits of the plain forward pass of ``x``.
    """
    rows: list[Tensor] = []

    def substitute(mod: nn.Module, args: Any, output: Any) -> Tensor:
        return rows[0]

    def run(batch: Tensor, once: bool) -> Tensor:
        rows[:] = [batch]
        handle = module.register_forward_hook(substitute)
        try:
            inputs = x if once else x.repeat(batch.shape[0], 1, 1, 1)
            return forward_logits(model, inputs, rows=batch.shape[0])
        finally:
            remove_hook(handle)

    drops = []
    flat_out = out.reshape(1, -1)
    for a, b in chunks(len(channels), batch_size):
        k = b - a
        with torch.inference_mode():
            batch = flat_out.expand(k + 1, -1).clone()
            batch[1:].scatter_(1, positions[channels[a:b]], 0.0)
            batch = batch.view(k + 1, *out.shape[1:])
        logits = None
        if trunk_once:
            try:
                logits = run(batch, once=True)
                if logits.shape != (k + 1, reference.shape[0]) or not _close(logits[0], reference):
                    logits = None
            except (RuntimeError, ExplainzooError):
                logits = None
            if logits is None:
                trunk_once = False
        if logits is None:
            logits = run(batch, once=False)
        s = target_scores(logits, target)
        drops.append(s[0] - s[1:])
    result = torch.cat(drops) if drops else torch.zeros(0, device=out.device)
    return result, trunk_once


def _close(row: Tensor, reference: Tensor) -> bool:
    """Same logits up to float reordering (relative to the largest logit)."""
    tol = 1e-3 * max(1.0, float(reference.abs().max()))
    return bool((row.float() - reference.float()).abs().max() <= tol)


def _clean_pass(
    explainer: AttributionExplainer, ctx: Context
) -> tuple[Tensor, bool, Tensor, Tensor, Tensor, Tensor]:
    """What Occlusion and RISE need before perturbing: one clean forward pass.

    Returns (x, whether scores are probabilities, the logits, the targets,
    their logits, the model-input value of a removed pixel).
    """
    x = ctx.require_x()
    logits = forward_logits(ctx.model, x)
    targets = ctx.targets(logits)
    fill = fill_value(ctx.backbone, explainer.config["baseline"], x)
    softmax = explainer.config["score"] == "probability"
    return x, softmax, logits, targets, gather_scores(logits, targets), fill


class Occlusion(AttributionExplainer):
    """Occlusion: how much the class score drops when a window is covered.

    Zeiler & Fergus, Visualizing and Understanding Convolutional Networks,
    ECCV 2014 (https://arxiv.org/abs/1311.2901). A ``window`` x ``window``
    square slides with ``stride`` over the image; at each position the square
    is replaced by the ``baseline`` value and the drop s(x) - s(x_occluded) of
    the target's score (softmax probability as in the paper, or the logit) is
    recorded. Each pixel gets the mean drop of the windows that cover it
    (as Captum does); the last window of a row/column is moved to touch the
    border so every pixel is covered.

    Defaults: ``window=0`` -> 2/7 of the shorter side (64 px at 224), a 6 x 6
    grid with ``stride=0`` -> half the window: 36 forward passes per image.
    Windows whose pixels already equal the baseline change nothing: drop 0,
    no pass.
    """

    description = "Occlusion: drop of the class score when a sliding window is covered"
    paper = "Zeiler & Fergus, Visualizing and Understanding CNNs, ECCV 2014 (arXiv:1311.2901)"
    options = {
        "window": Option(0, "side of the occluding square in pixels (0: 2/7 of the shorter side)",
                         low=0, high=1 << 16),
        "stride": Option(0, "step between windows in pixels (0: half the window)", low=0, high=1 << 16),
        "baseline": fill_option("mean"),
        "score": _SCORE_OPTION,
        "batch_size": batch_option(8),
    }

    def windows(self, hw: tuple[int, int]) -> tuple[int, int, list[tuple[int, int]]]:
        """(window height, width, top-left corners) for an input of size ``hw``."""
        h, w = hw
        side = self.config["window"] or max(1, round(2 * min(h, w) / 7))
        stride = self.config["stride"] or max(1, side // 2)
        wh, ww = min(side, h), min(side, w)

        def starts(total: int, size: int) -> list[int]:
            s = list(range(0, total - size + 1, stride))
            if s[-1] != total - size:
                s.append(total - size)
            return s

        return wh, ww, [(t, l) for t in starts(h, wh) for l in starts(w, ww)]  # noqa: E741

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        x, softmax, logits, targets, scores, fill = _clean_pass(self, ctx)
        n, _, h, w = x.shape
        wh, ww, corners = self.windows((h, w))
        count = torch.zeros(h, w, device=x.device)
        for t, l in corners:  # noqa: E741
            count[t : t + wh, l : l + ww] += 1
        raw = torch.zeros(n, h, w, device=x.device)
        for i in range(n):
            base = target_scores(logits[i : i + 1], int(targets[i]), softmax)[0]
            live = [
                (t, l) for t, l in corners  # noqa: E741
                if not torch.equal(x[i, :, t : t + wh, l : l + ww], fill.expand(3, wh, ww))
            ]

            def make_masks(a: int, b: int, live: list[tuple[int, int]] = live) -> Tensor:
                m = torch.ones(b - a, h, w, dtype=x.dtype, device=x.device)
                for j, (t, l) in enumerate(live[a:b]):  # noqa: E741
                    m[j, t : t + wh, l : l + ww] = 0
                return m

            occluded = chunked_masked_scores(
                ctx.model, x[i], make_masks, len(live), fill, int(targets[i]),
                self.config["batch_size"], softmax,
            )
            for (t, l), s in zip(live, (base - occluded).tolist()):  # noqa: E741
                raw[i, t : t + wh, l : l + ww] += s
        return raw / count, targets, scores


class RISE(AttributionExplainer):
    """RISE: randomised input sampling, the score-weighted mean of random masks.

    Petsiuk, Das & Saenko, RISE: Randomized Input Sampling for Explanation of
    Black-box Models, BMVC 2018 (https://arxiv.org/abs/1806.07421)::

        S(x) = 1 / (N p) * sum_i f_c(x * M_i) M_i

    Each mask M_i: an s x s grid of independent Bernoulli(p) cells, upsampled
    bilinearly to (s+1) x ceil(H/s) by (s+1) x ceil(W/s) and cropped to H x W
    at a uniformly random offset inside one cell (as in the authors' code;
    their resize pads by reflection, ours by the edge value). f_c is the
    target's softmax probability. The masks depend only on ``seed``,
    ``masks``, ``cells`` and ``p`` (not on ``batch_size`` nor on the batch),
    and every image of a call sees the same masks.

    ``exp.raw`` is S minus its mean over the image (``center=true``, the
    default): a constant shift, so the [0,1] map is the min-max scaled S as
    the paper shows it; S itself is positive everywhere with a large common
    offset (about the mean masked score), and dividing it by its maximum
    would paint the whole image near the top of the colour scale.
    ``center=false`` keeps the paper's S as ``exp.raw`` (map = S / max S).

    Default ``masks=48`` keeps a call under 1.5 s on a 2-core CPU
    (EfficientNet-Lite0, 224 px); the paper uses 4000-8000 and the map gets
    much smoother with ``masks=1000`` or more.
    """

    description = "RISE: class-probability-weighted average of random smooth masks"
    paper = "Petsiuk et al., RISE, BMVC 2018 (arXiv:1806.07421)"
    options = {
        "masks": Option(48, "number of random masks (the paper uses 4000+; more is smoother)",
                        low=1, high=1 << 20),
        "cells": Option(7, "mask grid size s (s x s cells)", low=1, high=256),
        "p": Option(0.5, "probability that a cell is kept", low=0.01, high=1.0),
        "baseline": fill_option("mean"),
        "score": _SCORE_OPTION,
        "center": Option(True, "subtract the map's mean (min-max display, as in the paper's figures)"),
        "seed": seed_option(),
        "batch_size": batch_option(8),
    }

    def masks(self, hw: tuple[int, int], start: int, stop: int, draws: tuple[Tensor, Tensor]) -> Tensor:
        """Masks ``start:stop`` (K,H,W) from the drawn grids and offsets."""
        grids, offsets = draws
        h, w = hw
        s = self.config["cells"]
        ch, cw = math.ceil(h / s), math.ceil(w / s)
        up = F.interpolate(grids[start:stop, None], size=((s + 1) * ch, (s + 1) * cw),
                           mode="bilinear", align_corners=False)[:, 0]
        crops = [m[dy : dy + h, dx : dx + w] for m, (dy, dx) in zip(up, offsets[start:stop].tolist())]
        return torch.stack(crops).clamp_(0, 1)  # bilinear rounding can give 1 + 1e-7

    def draw(self, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The call's random grids (K,s,s) and crop offsets (K,2), from ``seed``."""
        g = generator(self.config["seed"])
        k, s = self.config["masks"], self.config["cells"]
        grids = (torch.rand(k, s, s, generator=g) < self.config["p"]).float()
        ch, cw = math.ceil(hw[0] / s), math.ceil(hw[1] / s)
        offsets = torch.stack([torch.randint(0, ch, (k,), generator=g),
                               torch.randint(0, cw, (k,), generator=g)], dim=1)
        return grids, offsets

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        x, softmax, logits, targets, scores, fill = _clean_pass(self, ctx)
        n, _, h, w = x.shape
        draws = self.draw((h, w))
        total = self.config["masks"]
        sal = torch.zeros(n, h, w, dtype=torch.float32, device=x.device)
        for a, b in chunks(total, self.config["batch_size"]):
            m = self.masks((h, w), a, b, draws).to(device=x.device, dtype=x.dtype)
            for i in range(n):
                s = masked_scores(ctx.model, x[i], m, fill, int(targets[i]), softmax)
                sal[i] += torch.einsum("k,khw->hw", s, m.float())
        sal = sal / (total * self.config["p"])
        if self.config["center"]:
            sal = sal - sal.mean(dim=(1, 2), keepdim=True)
        return sal, targets, scores
