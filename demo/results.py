"""What each tab of the demo gets back: plain, gradio-free dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "CompareResult",
    "EvaluateResult",
    "ExplainResult",
    "GalleryItem",
    "GridResult",
    "Prediction",
    "ProgressFn",
    "class_label",
    "quiet",
]

#: ``progress(fraction in [0,1], message)``: how long calls report where they are.
ProgressFn = Callable[[float, str], None]


def quiet(fraction: float, message: str) -> None:
    """The progress callback of a caller that wants none."""


def class_label(backbone: Any, index: int) -> str:
    """The label of class ``index`` of a backbone (its number when it has no label)."""
    return backbone.labels[index] if 0 <= index < len(backbone.labels) else str(index)


#: What the Explain tab's "score" control offers (see ``DemoService.score_target``).
SCORES: tuple[str, ...] = ("logit", "probability")


def explained_class(exp: Any, predictions: Any) -> int:
    """The class a result is about: the target's class, else (a contrast, a group) the top-1."""
    t = int(exp.targets[0]) if exp.targets is not None else -1
    return t if t >= 0 else predictions[0].index


@dataclass(frozen=True)
class Prediction:
    """One class of the top-k: index, label and softmax probability."""

    index: int
    label: str
    prob: float


@dataclass(frozen=True)
class ExplainResult:
    """What the Explain tab shows.

    Attributes:
        overlay: the map blended over the model's view of the image.
        raw: the map as computed (before upsampling), min-max scaled, enlarged
            with nearest neighbours so its resolution stays visible.
        map: the (H,W) float32 map in [0,1].
        predictions: top-5 classes with probabilities.
        target: the class explained; ``target_label`` its name.
        layer: the resolved module path (None for input-level methods).
        weights: where the backbone's weights came from.
        warning: set when the backbone runs on random init.
        seconds: time spent in the explainer.
        raw_map: the explainer's raw map (layer resolution, its own units,
            before any scaling): what the ``.npy`` download holds.
        outlier_perc: percent of the map's top values clipped in ``overlay``
            and ``raw`` (0: drawn as computed; see :mod:`explainzoo.demo.display`).
        target_description: the score explained, e.g. "tiger cat - tabby
            (logit contrast)"; ``score`` is its value.
    """

    overlay: Image.Image
    raw: Image.Image
    map: np.ndarray
    predictions: list[Prediction]
    target: int
    target_label: str
    score: float
    layer: str | None
    backbone: str
    explainer: str
    weights: str
    pretrained: bool
    warning: str | None
    seconds: float
    raw_map: np.ndarray | None = None
    outlier_perc: float = 0.0
    target_description: str = ""


@dataclass(frozen=True)
class GalleryItem:
    """One captioned image of a comparison."""

    image: Image.Image
    caption: str
    map: np.ndarray | None = None


@dataclass(frozen=True)
class CompareResult:
    """A row of captioned overlays and the per-item errors (by name)."""

    items: list[GalleryItem]
    errors: dict[str, str]
    warnings: list[str]


@dataclass(frozen=True)
class EvaluateResult:
    """What the Evaluate tab shows.

    Attributes:
        headers: the table's column names (:data:`~explainzoo.demo.service.EVALUATE_COLUMNS`).
        rows: one row per backbone x explainer, then that backbone's ``random``
            row (chance: smooth random maps); numbers are floats rounded to 4
            places, None where not measured (sanity columns when ``sanity_steps``
            is 0, every number of a failed pair, whose error is in the last column).
        figure: the deletion and insertion curves, one panel row per backbone.
        warnings: random-init warnings of the backbones used.
        steps: deletion / insertion steps used; ``sanity_steps`` likewise.
        seconds: wall time of the evaluation.
    """

    headers: list[str]
    rows: list[list[Any]]
    figure: Image.Image
    warnings: list[str]
    steps: int
    sanity_steps: int
    seconds: float


@dataclass(frozen=True)
class GridResult:
    """A tile grid (filters, activations) and its caption."""

    image: Image.Image
    caption: str
    layer: str
    warning: str | None
    grid: np.ndarray
