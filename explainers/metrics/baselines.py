"""Chance levels: smooth, seeded random maps and every metric measured on them.

The random maps are noise at the explained layer's resolution, upsampled the
same way as real maps (bilinear), so a number can be read against chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, preserved_state

from ..base import as_backbone
from ..mechanics import scale_unit, upsample
from .curves import DEFAULT_BATCH_SIZE, check_count, deletion, insertion, resolve_metric_target
from .pointing import pointing_game
from .similarity import spearman, ssim

__all__ = ["random_baseline", "random_maps"]


def random_maps(
    n: int,
    size: tuple[int, int],
    resolution: tuple[int, int] | None = None,
    seed: int = 0,
) -> Tensor:
    """Seeded random maps (N,H,W) in [0,1], as smooth as the maps they stand beside.

    Uniform noise at ``resolution`` = (h, w) (an explanation's ``exp.raw``
    resolution: the explained layer's), upsampled to ``size`` bilinearly with
    :func:`explainzoo.explainers.upsample` and normalised like real maps.
    Pixel-wise noise (``resolution`` = ``size``) would scatter the deletions
    and make every real method look worse than chance.
    """
    h, w = resolution or size
    g = torch.Generator().manual_seed(int(seed))
    raw = torch.rand(n, h, w, generator=g)
    return scale_unit(upsample(raw, tuple(size)))


def random_baseline(
    backbone: Backbone | nn.Module,
    x: Tensor,
    target: Any = None,
    resolution: tuple[int, int] | None = None,
    steps: int = 20,
    trials: int = 3,
    seed: int = 0,
    box: Sequence[float] | None = None,
    mask: Tensor | None = None,
    reference: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, float]:
    """The chance level of every metric, averaged over ``trials`` random maps per image.

    Args:
        resolution: (h, w) of the noise (``tuple(exp.raw.shape[-2:])``); None:
            pixel-wise.
        reference: (N,H,W) real maps: adds ``spearman`` and ``ssim`` between a
            reference map and a random map -- what a sanity check that fully
            decorrelates looks like.
        box, mask: add ``pointing`` (hit rate of random maps).

    Returns:
        ``{"deletion_auc", "insertion_auc"[, "pointing"][, "spearman", "ssim"]}``.
        Cost: ``2 * trials * N * (steps+1)`` images through the model (plus ``N``
        when ``target`` is None).
    """
    bb = as_backbone(backbone)
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ExplainzooError("x must be a (N,3,H,W) tensor")
    check_count(trials, "trials")
    n, _, h, w = x.shape
    with bb.lock, preserved_state(bb.model):  # resolved once: every trial follows the same target
        target, _ = resolve_metric_target(bb, target, x.detach().float(), batch_size)
    dels, ins, pts, rhos, ssims = [], [], [], [], []
    for t in range(trials):
        rm = random_maps(n, (h, w), resolution, seed=seed * 1000 + t)
        dels.append(deletion(bb, x, rm, target, steps, batch_size=batch_size).auc)
        ins.append(insertion(bb, x, rm, target, steps, batch_size=batch_size).auc)
        if box is not None or mask is not None:
            pts.append(pointing_game(rm, box=box, mask=mask).float())
        if reference is not None:
            rhos.append(spearman(reference, rm))
            ssims.append(ssim(reference, rm))
    out = {
        "deletion_auc": float(torch.stack(dels).mean()),
        "insertion_auc": float(torch.stack(ins).mean()),
    }
    if pts:
        out["pointing"] = float(torch.stack(pts).mean())
    if rhos:
        out["spearman"] = float(torch.stack(rhos).mean())
        out["ssim"] = float(torch.stack(ssims).mean())
    return out
