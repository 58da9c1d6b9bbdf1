"""Rendering: explanations -> PIL images with matplotlib colormaps.

The only module of ``explainzoo.explainers`` that touches PIL or matplotlib
(both come with the ``demo`` extra and are imported lazily).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from explainzoo.backbones import ExplainzooError
from explainzoo.backbones.preprocess import image_to_tensor

from .result import Explanation


def _mpl_cmap(name: str):
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise ExplainzooError("rendering needs matplotlib: pip install 'explainzoo[demo]'") from exc
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        from explainzoo.backbones.errors import unknown

        raise unknown("colormap", name, list(matplotlib.colormaps)) from None


def _pil():
    from PIL import Image

    return Image


def colorize(values: Tensor | np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H,W) values in [0,1] -> (H,W,3) uint8 RGB through a matplotlib colormap."""
    arr = values.detach().cpu().float().numpy() if isinstance(values, Tensor) else np.asarray(values)
    rgba = _mpl_cmap(cmap)(np.clip(arr, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def _to_rgb_array(image: Any, size: tuple[int, int]) -> np.ndarray:
    """Any image -> (H,W,3) float32 in [0,1], resized to ``size`` = (H,W)."""
    t = image_to_tensor(image)
    if tuple(t.shape[-2:]) != tuple(size):
        t = torch.nn.functional.interpolate(
            t[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0]
    return t.clamp(0, 1).permute(1, 2, 0).numpy()


def _pick_map(exp: Explanation | Tensor, index: int) -> Tensor:
    if isinstance(exp, Explanation):
        if exp.kind != "map" or exp.maps is None:
            raise ExplainzooError(f"{exp.method} returns a grid, not a map: use tile_grid()")
        return exp.maps[index]
    t = exp.detach()
    return t[index] if t.ndim == 3 else t


def heatmap(exp: Explanation | Tensor, index: int = 0, cmap: str = "jet"):
    """The map alone as a colour image (PIL)."""
    return _pil().fromarray(colorize(_pick_map(exp, index), cmap))


def overlay(
    image: Any,
    exp: Explanation | Tensor,
    index: int = 0,
    cmap: str = "jet",
    alpha: float = 0.5,
):
    """Blend the map of image ``index`` over ``image`` -> PIL image.

    Args:
        image: the picture the map belongs to: PIL, array or (3,H,W) tensor in
            [0,1]. Pass what the model saw (``backbone.preprocessing.resize_crop``)
            for exact alignment; another size is resized to the map.
        alpha: weight of the heat map (0: image only, 1: map only).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ExplainzooError(f"alpha must be a number in [0, 1], got {alpha!r}")
    m = _pick_map(exp, index)
    base = _to_rgb_array(image, tuple(m.shape[-2:]))
    heat = colorize(m, cmap).astype(np.float32) / 255.0
    out = (1.0 - alpha) * base + alpha * heat
    return _pil().fromarray((out * 255.0 + 0.5).astype(np.uint8))


def tile_grid(exp: Explanation | Tensor, index: int = 0, cmap: str = "viridis", scale: int = 0):
    """A grid (filters, activations) as a PIL image.

    Single-channel grids go through ``cmap``; RGB filter grids are shown as
    they are. ``scale`` > 0 enlarges by that integer factor (nearest); 0
    picks one that makes the image at least 256 pixels wide.
    """
    if isinstance(exp, Explanation):
        if exp.grid is None:  # kind "grid" (an Explanation built by hand may leave kind at "map")
            raise ExplainzooError(f"{exp.method} returns maps, not a grid: use overlay()")
        grid = exp.grid[index]
    else:
        grid = exp[index] if exp.ndim == 4 else exp
    grid = grid.detach().cpu().float().clamp(0, 1)
    if grid.shape[0] == 1:
        arr = colorize(grid[0], cmap)
    else:
        arr = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    if scale <= 0:
        scale = max(1, -(-256 // arr.shape[1]))
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    return _pil().fromarray(arr)


def clip_percentile(maps: Tensor | np.ndarray, outlier_perc: float = 2.0) -> Tensor:
    """Clip each map at its ``100 - outlier_perc`` percentile, then scale it to [0, 1].

    The display rule of Captum's ``visualize_image_attr(outlier_perc=2)``, with a
    plain percentile (Captum thresholds the cumulative sum of sorted values):
    gradient maps are heavy-tailed, a few pixels take the whole colour range
    and the rest of the map draws as 0. Values above the threshold become 1.
    A map whose threshold does not exceed its minimum (mostly zeros) is scaled
    by its maximum instead, so a sparse map is never blanked out.

    Args:
        maps: (N,H,W) or (H,W) values (any range; NaN counts as 0).
        outlier_perc: percent of the highest values clipped (0: min-max scaling only).

    Returns:
        A float32 tensor of the same shape, in [0, 1].
    """
    if isinstance(outlier_perc, bool) or not isinstance(outlier_perc, int | float) or not 0 <= outlier_perc < 100:
        raise ExplainzooError(f"outlier_perc must be a number in [0, 100), got {outlier_perc!r}")
    t = torch.as_tensor(maps).detach().cpu().float()
    t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
    flat = t.reshape(-1, *t.shape[-2:]).flatten(1)
    lo = flat.min(dim=1).values
    hi = flat.max(dim=1).values
    if outlier_perc > 0 and flat.shape[1] > 1:
        q = torch.quantile(flat, 1.0 - float(outlier_perc) / 100.0, dim=1)
        hi = torch.where(q > lo, q, hi)
    span = (hi - lo).clamp_min(0)[:, None]
    out = torch.where(span > 0, (flat.clamp(max=hi[:, None]) - lo[:, None]) / span.clamp_min(1e-30), 0.0)
    return out.clamp(0, 1).reshape(t.shape)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def colorbar(
    cmap: str = "jet",
    width: int = 448,
    low: str = "0",
    high: str = "1",
    title: str = "",
    height: int = 14,
):
    """A horizontal colour bar as a PIL image: the gradient, ``low`` / ``high`` under its ends.

    Args:
        cmap: the matplotlib colormap drawn.
        width: bar width in pixels (the image it goes under).
        low, high: labels of the two ends (e.g. the map's value range).
        title: a centred label between them.
        height: bar thickness in pixels.
    """
    from PIL import ImageDraw

    Image = _pil()
    pad, font = 4, _font(13)
    ramp = np.repeat(colorize(np.linspace(0.0, 1.0, width)[None], cmap), height, axis=0)
    out = Image.new("RGB", (width, height + 3 * pad + 14), (255, 255, 255))
    out.paste(Image.fromarray(ramp), (0, pad))
    draw = ImageDraw.Draw(out)
    y = height + 2 * pad
    draw.text((2, y), low, fill=(20, 20, 20), font=font)
    draw.text((width - 2, y), high, fill=(20, 20, 20), font=font, anchor="ra")
    if title:
        draw.text((width // 2, y), title, fill=(60, 60, 60), font=font, anchor="ma")
    return out
