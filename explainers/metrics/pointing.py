"""The pointing game (Zhang et al., Top-down Neural Attention by Excitation
Backprop, ECCV 2016, https://arxiv.org/abs/1608.00507): does a map's maximum
fall inside a box or mask. No forward pass."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from explainzoo.backbones import ExplainzooError

__all__ = ["box_mask", "pointing_game"]


def box_mask(box: Sequence[float], size: tuple[int, int]) -> Tensor:
    """A (H,W) bool mask of the pixels whose centres lie in ``box`` = (x0, y0, x1, y1)."""
    if len(box) != 4:
        raise ExplainzooError(f"a box is (x0, y0, x1, y1), got {tuple(box)!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ExplainzooError(f"box {tuple(box)!r} is empty: need x1 > x0 and y1 > y0")
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def pointing_game(
    maps: Tensor,
    box: Sequence[float] | None = None,
    mask: Tensor | None = None,
    tolerance: int = 0,
) -> Tensor:
    """Does each map's maximum fall inside the box or mask? -> (N,) bool.

    Zhang et al., 2016 (arXiv:1608.00507). The maximum is the first pixel in
    row-major order that attains the map's largest value; ``tolerance`` grows
    the region by that many pixels (the paper uses 15 at 224 px). No forward pass.

    Args:
        maps: (N,H,W) or (H,W).
        box: (x0, y0, x1, y1) in the map's pixel coordinates.
        mask: (H,W) or (N,H,W) boolean region instead of a box.
    """
    if maps.ndim == 2:
        maps = maps[None]
    n, h, w = maps.shape
    if (box is None) == (mask is None):
        raise ExplainzooError("pointing_game needs exactly one of box or mask")
    region = (box_mask(box, (h, w)) if box is not None else mask).bool()  # type: ignore[union-attr]
    if region.ndim == 2:
        region = region[None].expand(n, h, w)
    if region.shape != (n, h, w):
        raise ExplainzooError(f"mask of shape {tuple(region.shape)} does not match maps {(n, h, w)}")
    if tolerance > 0:
        region = F.max_pool2d(region[:, None].float(), 2 * tolerance + 1, 1, tolerance)[:, 0] > 0
    flat = torch.nan_to_num(maps.detach().float(), nan=-math.inf).reshape(n, -1)
    idx = flat.argmax(dim=1)
    return region.reshape(n, -1).gather(1, idx[:, None])[:, 0]
