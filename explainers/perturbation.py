"""Methods that score many perturbed forward passes: Score-CAM, Ablation-CAM,
Occlusion and RISE.

All of them run their extra forward passes under ``torch.inference_mode`` in
chunks of ``batch_size`` copies (see :mod:`explainzoo.explainers.mechanics`),
one image at a time, so memory is bounded and ``explain(batch)[i]`` equals
``explain(x_i)``. Score-CAM and Ablation-CAM are one ``weights`` step of
:class:`~explainzoo.explainers.base.CAMExplainer`. Work whose result is
known exactly is skipped: Score-CAM scores all constant channels with one
pass, Ablation-CAM gives all-zero channels weight 0 without a pass and runs
the layers below its target once per chunk, Occlusion does not run windows
that change nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError

from .base import AttributionExplainer, CAMExplainer, Context
from .budget import layer_channels
from .mechanics import (
    chunked_masked_scores,
    chunks,
    fill_value,
    forward_logits,
    generator,
    masked_scores,
    minmax_per_map,
    temporary_hook,
    upsample,
)
from .options import Option, batch_option, fill_option, seed_option
from .targets import Target

_SCORE_OPTION = Option(
    "probability",
    "score of a perturbed copy: the target's softmax 'probability' (the paper's) or its 'logit' "
    "(targets that are no logits, e.g. T.Probability or T.Region, are scored as they are)",
    choices=("probability", "logit"),
)


class ScoreCAM(CAMExplainer):
    """Score-CAM: channels weighted by the score of the image they unmask.

    Wang et al., Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks, CVPR-W 2020 (https://arxiv.org/abs/1910.01279).
    Each channel's map, upsampled to the input and min-max scaled to [0,1],
    masks the image; with p_c the target's softmax probability::

        H_k = minmax(Upsample(A_k)),  w_k = p_c(X * H_k),  map = ReLU(sum_k w_k A_k)

    By default every live channel is scored: one forward pass per channel
    whose activations vary over space. Work known exactly is skipped: every
    constant channel has the mask H = 0 (min-max of a constant), so one pass
    scores them all, and all-zero channels need none. The paper's "increase
    of confidence" subtracts the baseline score p_c(X_b), a constant shared by
    all channels; like the authors' code we use p_c(X * H_k) itself.

    ``max_channels=K`` (a deviation, off by default) scores only the K
    channels whose activations vary most over space (the selection of the
    "Faster Score-CAM" variant); the others get weight 0. The map then differs
    from Score-CAM's. Pearson r of the raw map with the exact one,
    EfficientNet-Lite0 (ImageNet weights), skimage's ``chelsea`` at 224 px:
    on ``blocks.5`` (192 channels, 7x7) r = 0.51 with K = 32, 0.57 with 64,
    0.94 with 128; on the last layer (``bn2``, 1280 channels, most of them
    all zero) r = 0.97 with K = 32, 0.99 with 64, 0.998 with 128; on
    ``coffee`` 0.76 / 0.88 / 0.98 (``blocks.5``) and 0.994 / 0.998 / 1.000
    (last). The variance ranking misses channels with a high score, so the error depends
    on the layer and the image: measure before relying on a subset.

    ``weights=channel_softmax`` weights the channels as pytorch-grad-cam and
    torchcam do instead: a softmax over the channels of the target's logit
    y_c(X * H_k). Computed as exp(y_k - max_k y_k) over the scored channels:
    the softmax's denominator (and the unscored all-zero channels it would
    include) scales every weight of an image alike, which the scaling to
    [0,1] removes, so the map is theirs.

    ``baseline`` sets what masked-out pixels become (``mean``: X * H exactly).
    """

    description = "Score-CAM: channels weighted by the class probability of the image they unmask"
    paper = "Wang et al., Score-CAM, CVPR Workshops 2020 (arXiv:1910.01279)"
    needs_gradient = False
    options = {
        "max_channels": Option(0, "score only the K channels with the largest spatial variance "
                                  "(0: all live channels, the method; K > 0 approximates it)",
                               low=0, high=1 << 20, cost="passes", unbounded=0),
        "batch_size": batch_option(8),
        "baseline": fill_option("mean"),
        "weights": Option("probability",
                          "'probability': the target's softmax probability of the masked image (the paper); "
                          "'channel_softmax': a softmax of its logit over channels (pytorch-grad-cam, torchcam)",
                          choices=("probability", "channel_softmax")),
    }
    base_passes = 2  # the capture pass and the one pass of every constant channel

    def effective(self, name: str, value: Any, backbone: Any, hw: tuple[int, int], layer: str | None) -> float:
        if name == "max_channels":  # 0: every live channel, at most the layer's channels
            return float(min(value, layer_channels(backbone, layer)) if value else layer_channels(backbone, layer))
        return super().effective(name, value, backbone, hw, layer)

    def weights(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        target = ctx.clean().target
        weights = torch.zeros(A.shape[:2], dtype=torch.float32, device=A.device)
        for i in range(A.shape[0]):
            weights[i] = self.image_weights(ctx, A[i].float(), ctx.require_x()[i], target.image(i))
        return weights

    def channel_order(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """(channels to score, most varying first; constant-channel mask) of one image's A (C,h,w)."""
        flat = a.flatten(1)
        constant = flat.amax(dim=1) == flat.amin(dim=1)
        variance = torch.where(constant, torch.full_like(flat[:, 0], -1.0), flat.var(dim=1, unbiased=False))
        order = variance.argsort(descending=True, stable=True)
        chosen = order[~constant[order]]
        k = self.config["max_channels"]
        return (chosen[:k] if k else chosen), constant

    def image_weights(self, ctx: Context, a: Tensor, x: Tensor, target: Target) -> Tensor:
        """(C,) weights of one image: A (C,h,w), x (3,H,W), its resolved target."""
        probability = self.config["weights"] == "probability"
        hw = ctx.input_hw
        fill = fill_value(ctx.backbone, self.config["baseline"], x)
        chosen, constant = self.channel_order(a)

        def make_masks(start: int, stop: int) -> Tensor:
            return minmax_per_map(upsample(a[chosen[start:stop]], hw))

        w = torch.zeros(a.shape[0], dtype=torch.float32, device=a.device)
        w[chosen] = chunked_masked_scores(
            ctx.backbone, x, make_masks, len(chosen), fill, target, self.config["batch_size"], softmax=probability,
        )
        live_constant = constant & (a.flatten(1)[:, 0] != 0)
        if live_constant.any():  # mask H = 0 for all of them: one pass
            zero = torch.zeros(1, *hw, dtype=x.dtype, device=x.device)
            w[live_constant] = masked_scores(ctx.backbone, x, zero, fill, target, softmax=probability)
        if not probability:
            scored = torch.zeros_like(constant)
            scored[chosen] = True
            scored |= live_constant
            if scored.any():
                y = w[scored]
                w.zero_()
                w[scored] = (y - y.max()).exp()
        return w


class AblationCAM(CAMExplainer):
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
    needs_gradient = False
    options = {
        "batch_size": batch_option(128),
        "trunk_once": Option(True, "run the layers below the target once per chunk (exact; auto-fallback)"),
    }

    def extra_passes(self, backbone: Any, hw: tuple[int, int], layer: str | None) -> float:
        return float(layer_channels(backbone, layer))  # one pass per (live) channel

    def weights(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        x = ctx.require_x()
        out = ctx.layer_output()  # the layer's own layout: what the hook substitutes
        clean = ctx.clean()
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
            target = clean.target.image(i)
            drops, trunk_once = _ablation_drops(
                ctx.backbone, module, x[i : i + 1], out[i : i + 1], positions, live,
                clean.logits[i], target, self.config["batch_size"], trunk_once,
            )
            y = float(clean.scores[i])
            weights[i, live] = drops / (abs(y) if y != 0 else 1.0)
        return weights


def _ablation_drops(
    model: Backbone | nn.Module,
    module: nn.Module,
    x: Tensor,
    out: Tensor,
    positions: Tensor,
    channels: Tensor,
    reference: Tensor,
    target: Target,
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
        with temporary_hook(module, substitute):
            inputs = x if once else x.repeat(batch.shape[0], 1, 1, 1)
            return forward_logits(model, inputs, rows=batch.shape[0])

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
                if logits.shape != (k + 1, *reference.shape) or not _close(logits[0], reference):
                    logits = None
            except (RuntimeError, ExplainzooError):
                logits = None
            if logits is None:
                trunk_once = False
        if logits is None:
            logits = run(batch, once=False)
        s = target.scores(logits)
        drops.append(s[0] - s[1:])
    result = torch.cat(drops) if drops else torch.zeros(0, device=out.device)
    return result, trunk_once


def _close(row: Tensor, reference: Tensor) -> bool:
    """Same logits up to float reordering (relative to the largest logit)."""
    tol = 1e-3 * max(1.0, float(reference.abs().max()))
    return bool((row.float() - reference.float()).abs().max() <= tol)


def _perturbation_setup(explainer: AttributionExplainer, ctx: Context) -> tuple[Tensor, bool, Tensor]:
    """(x, whether scores are probabilities, the model-input value of a removed pixel)."""
    x = ctx.require_x()
    fill = fill_value(ctx.backbone, explainer.config["baseline"], x)
    return x, explainer.config["score"] == "probability", fill


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
                         low=0, high=1 << 16, cost="inverse"),
        "stride": Option(0, "step between windows in pixels (0: half the window)", low=0, high=1 << 16,
                         cost="inverse"),
        "baseline": fill_option("mean"),
        "score": _SCORE_OPTION,
        "batch_size": batch_option(8),
    }

    def effective(self, name: str, value: Any, backbone: Any, hw: tuple[int, int], layer: str | None) -> float:
        return float(len(self.windows(hw)[2]))  # window and stride together: one pass per window

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
        x, softmax, fill = _perturbation_setup(self, ctx)
        clean = ctx.clean()
        n, _, h, w = x.shape
        wh, ww, corners = self.windows((h, w))
        count = torch.zeros(h, w, device=x.device)
        for t, l in corners:  # noqa: E741
            count[t : t + wh, l : l + ww] += 1
        raw = torch.zeros(n, h, w, device=x.device)
        for i in range(n):
            target = clean.target.image(i)
            base = target.scores(clean.logits[i : i + 1], softmax)[0]
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
                ctx.backbone, x[i], make_masks, len(live), fill, target, self.config["batch_size"], softmax,
            )
            for (t, l), s in zip(live, (base - occluded).tolist()):  # noqa: E741
                raw[i, t : t + wh, l : l + ww] += s
        return raw / count, clean.targets, clean.scores


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

    The default ``masks=48`` is far below the paper's 4000-8000: the map gets
    much smoother with ``masks=1000`` or more.
    """

    description = "RISE: class-probability-weighted average of random smooth masks"
    paper = "Petsiuk et al., RISE, BMVC 2018 (arXiv:1806.07421)"
    options = {
        "masks": Option(48, "number of random masks (the paper uses 4000+; more is smoother)",
                        low=1, high=1 << 20, cost="passes"),
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
        x, softmax, fill = _perturbation_setup(self, ctx)
        clean = ctx.clean()
        n, _, h, w = x.shape
        draws = self.draw((h, w))
        total = self.config["masks"]
        sal = torch.zeros(n, h, w, dtype=torch.float32, device=x.device)
        for a, b in chunks(total, self.config["batch_size"]):
            m = self.masks((h, w), a, b, draws).to(device=x.device, dtype=x.dtype)
            for i in range(n):
                s = masked_scores(ctx.backbone, x[i], m, fill, clean.target.image(i), softmax)
                sal[i] += torch.einsum("k,khw->hw", s, m.float())
        sal = sal / (total * self.config["p"])
        if self.config["center"]:
            sal = sal - sal.mean(dim=(1, 2), keepdim=True)
        return sal, clean.targets, clean.scores
