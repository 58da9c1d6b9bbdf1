"""How the demo draws maps so that people can read them: outlier clipping, colour bars, captions.

Gradient maps (saliency, SmoothGrad, Integrated Gradients, Guided Backprop,
Guided Grad-CAM, ...) are heavy-tailed: a few pixels take the whole colour
range and the overlay is almost black. They are drawn with percentile
clipping, Captum's ``outlier_perc`` (default 2 %: values above the 98th
percentile are clipped to it before scaling). Which maps are clipped is
decided by the explainer's family, never by a table of names:

* an explainer may declare ``outlier_perc`` (a class attribute: the percent it
  wants clipped, 0 for never);
* otherwise every input-level attribution (an ``AttributionExplainer`` that is
  not a ``CAMExplainer``) is clipped, as Captum's visualiser does for every
  attribution it draws; class activation maps are smooth and never clipped.

Clipping changes the drawing only: metrics, downloads and the returned map
are the explainer's own values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from explainzoo.backbones import ExplainzooError
from explainzoo.explainers import AttributionExplainer, CAMExplainer, Explanation
from explainzoo.explainers.render import clip_percentile, colorbar, colorize

__all__ = [
    "MAX_OUTLIER_PERC",
    "OUTLIER_PERC",
    "RAW_SIDE",
    "check_outlier_perc",
    "display_maps",
    "outlier_perc_for",
    "raw_image",
    "reading_note",
    "with_colorbar",
]

#: Percent of a gradient map's highest values clipped before drawing (Captum's default).
OUTLIER_PERC = 2.0
#: The largest clipping a request may ask for.
MAX_OUTLIER_PERC = 20.0
#: Width of the raw map drawn with its colour bar (nearest-neighbour enlarged).
RAW_SIDE = 448


def check_outlier_perc(value: Any) -> float:
    """The clipping percent a request asks for: a number in ``0..MAX_OUTLIER_PERC``."""
    try:
        perc = float(value)
    except (TypeError, ValueError):
        raise ExplainzooError(f"outlier clipping must be a number of percent, got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= perc <= MAX_OUTLIER_PERC:
        raise ExplainzooError(f"outlier clipping must be between 0 and {MAX_OUTLIER_PERC:g} %, got {value!r}")
    return perc


def outlier_perc_for(cls: type, requested: float = OUTLIER_PERC) -> float:
    """The clipping applied to a map of explainer class ``cls`` (0: none).

    An explainer's own ``outlier_perc`` attribute wins (0 opts out, a number
    sets the default it is drawn with; ``requested`` then still decides when
    it is 0); otherwise input-level attributions get ``requested`` and CAMs 0.
    """
    declared = getattr(cls, "outlier_perc", None)
    if declared is not None:
        return 0.0 if float(declared) == 0 else float(requested)
    if issubclass(cls, CAMExplainer) or not issubclass(cls, AttributionExplainer):
        return 0.0
    return float(requested)


def display_maps(exp: Explanation | Tensor, outlier_perc: float) -> Tensor:
    """The (N,H,W) maps to draw: clipped at ``outlier_perc`` percent, or as they are when 0."""
    maps = exp.maps if isinstance(exp, Explanation) else exp
    if maps is None:
        raise ExplainzooError("this result is a tile grid, not a map")
    maps = maps.detach().cpu().float()
    return clip_percentile(maps, outlier_perc) if outlier_perc > 0 else maps


def raw_image(raw: Tensor | np.ndarray, size: tuple[int, int], cmap: str, outlier_perc: float) -> Image.Image:
    """The raw map (layer resolution) min-max scaled (clipped first when ``outlier_perc``),
    enlarged with nearest neighbours to ``size`` = (H, W) so its resolution stays visible."""
    scaled = clip_percentile(raw, outlier_perc)
    img = Image.fromarray(colorize(scaled, cmap))
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return img


def _value_range(raw: np.ndarray | None, outlier_perc: float) -> tuple[str, str]:
    if raw is None or raw.size == 0:
        return "0", "1"
    arr = np.nan_to_num(np.asarray(raw, dtype=np.float64))
    lo, hi = float(arr.min()), float(arr.max())
    if outlier_perc > 0:
        q = float(np.percentile(arr, 100.0 - outlier_perc))
        if q > lo:
            return f"{lo:.3g}", f">= {q:.3g} (p{100 - outlier_perc:g})"
    return f"{lo:.3g}", f"{hi:.3g}"


def with_colorbar(image: Image.Image, cmap: str, raw: np.ndarray | None, outlier_perc: float) -> Image.Image:
    """``image`` (the raw map) enlarged to :data:`RAW_SIDE` wide, a labelled colour bar under it.

    The bar's ends are the raw map's values: its minimum and its maximum, or
    the clipping threshold when the map was clipped.
    """
    w, h = image.size
    side = max(RAW_SIDE, w)
    big = image.resize((side, round(h * side / w)), Image.Resampling.NEAREST) if side != w else image
    low, high = _value_range(raw, outlier_perc)
    bar = colorbar(cmap, side, low, high, "raw map value")
    out = Image.new("RGB", (side, big.size[1] + bar.size[1]), (255, 255, 255))
    out.paste(big, (0, 0))
    out.paste(bar, (0, big.size[1]))
    return out


def reading_note(cmap: str, alpha: float, outlier_perc: float, input_level: bool) -> str:
    """How to read the overlay and the raw map, as Markdown (shown under every explanation)."""
    text = (
        f"**How to read it.** The overlay blends the map (opacity {float(alpha):.2f}) over the picture the "
        f"model saw, in the `{cmap}` colormap: its low end (the left of the colour bar) means no evidence "
        "for the class, its high end (the right) the strongest. The map is scaled to [0, 1] per image: "
        "colours compare regions of one image, not images. The raw map is the explainer's output at its own "
        "resolution (each block is one cell of the layer); the colour bar gives its values."
    )
    if outlier_perc > 0:
        text += (
            f" **Clipped:** this gradient map's top {outlier_perc:g} % of values are clipped to the "
            f"{100 - outlier_perc:g}th percentile before scaling (Captum's `outlier_perc`), so that a few "
            "extreme pixels do not turn the rest black; set the clipping to 0 to see it unclipped."
        )
    elif input_level:
        text += " Not clipped (clipping 0): a few extreme pixels may take the whole colour range."
    return text
