"""Faithfulness numbers for images x backbones x explainers (no rendering).

:func:`evaluate` runs the metrics of this package (deletion / insertion AUC,
the cascading-randomisation sanity check, the pointing game) for every image x
backbone x explainer, plus a random-map chance row per image and backbone
(:func:`chance_row`); :func:`summary` averages the rows over images;
:func:`faithfulness` gives one map's AUCs next to chance (the demo's caption).
Reports and the demo render these numbers; they compute none.

Cost per image x backbone (S = steps, K = sanity steps, T = random trials):
each explainer costs one explainer call, ``2*(S+1)`` forward passes for the
curves and ``K`` explainer calls for the sanity check; the chance row costs
``2*T*(S+1)`` forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError

from ..base import Explainer
from ..deadline import BackboneBusy, DeadlineExceeded
from ..result import Explanation
from .baselines import random_baseline, random_maps
from .curves import MAX_STEPS, deletion, insertion
from .pointing import pointing_game
from .sanity import MAX_CASCADE_STEPS, cascading_randomization
from .similarity import spearman, ssim

__all__ = [
    "CSV_FIELDS", "RANDOM", "Evaluation", "Faithfulness", "Row", "chance_row", "check_settings",
    "evaluate", "evaluate_explanation", "faithfulness", "input_box_mask", "layer_resolution", "summary",
]

#: The explainer name of the chance rows.
RANDOM = "random"
#: The columns of a row, in order (the CSV's).
CSV_FIELDS = (
    "image", "backbone", "weights", "explainer", "layer", "target", "label",
    "deletion_auc", "insertion_auc", "sanity_spearman", "sanity_ssim", "pointing",
    "forward_passes", "error",
)


@dataclass
class Row:
    """The numbers for one image x backbone x explainer (``explainer`` "random": chance)."""

    image: str
    backbone: str
    weights: str
    explainer: str
    layer: str = ""
    target: int | None = None
    label: str = ""
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    sanity_spearman: float | None = None
    sanity_ssim: float | None = None
    pointing: float | None = None
    forward_passes: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CSV_FIELDS}


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured.

    Attributes:
        rows: one :class:`Row` per image x backbone x explainer (plus "random").
        curves: (image, backbone) -> explainer -> {"deletion": (S+1,), "insertion": (S+1,)}
            probabilities (the random entry is the mean over trials).
        maps: (image, backbone) -> explainer -> (H,W) map in [0,1] (for overlays).
        inputs: (image, backbone) -> (3,H,W) the image as the model saw it, in [0,1].
        fractions: (S+1,) fraction of pixels removed / revealed.
        settings: the parameters used (steps, sanity steps, trials, seed, box).
    """

    rows: list[Row] = field(default_factory=list)
    curves: dict[tuple[str, str], dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    maps: dict[tuple[str, str], dict[str, Tensor]] = field(default_factory=dict)
    inputs: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    fractions: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def check_settings(steps: int, sanity_steps: int, trials: int) -> None:
    """One-line errors for settings outside the server-side caps."""
    if not 1 <= steps <= MAX_STEPS:
        raise ExplainzooError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
    if not 0 <= sanity_steps <= MAX_CASCADE_STEPS:
        raise ExplainzooError(f"sanity steps must be in 0..{MAX_CASCADE_STEPS}, got {sanity_steps}")
    if trials < 1:
        raise ExplainzooError(f"random trials must be >= 1, got {trials}")


def input_box_mask(bb: Backbone, image: Any, box: Sequence[float]) -> Tensor:
    """A box (x0, y0, x1, y1) in the original image's pixels -> (H,W) bool mask at the model input."""
    from explainzoo.backbones.preprocess import image_to_tensor

    t = image_to_tensor(image)
    h, w = t.shape[-2:]
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ExplainzooError(f"box {tuple(box)!r} is empty: need x1 > x0 and y1 > y0")
    m = np.zeros((h, w, 3), dtype=np.uint8)
    m[max(0, math.floor(y0)) : math.ceil(y1), max(0, math.floor(x0)) : math.ceil(x1)] = 255
    if not m.any():
        raise ExplainzooError(f"box {tuple(box)!r} lies outside the {w}x{h} image")
    return bb.preprocessing.resize_crop(m)[0] > 0.5


def layer_resolution(bb: Backbone) -> tuple[int, int] | None:
    """(h, w) of the backbone's ``last`` layer: the resolution of the chance maps."""
    try:
        fmt = bb.probe.formats.get(bb.layers.get("last", ""))
    except Exception:  # noqa: BLE001 - an odd model just gets pixel-wise noise
        return None
    return tuple(fmt.size) if fmt is not None else None  # type: ignore[return-value]


def evaluate_explanation(
    row: Row, explainer: Explainer, bb: Backbone, x: Tensor, exp: Explanation, steps: int = 20,
    sanity_steps: int = 0, seed: int = 0, batch_size: int = 16, mask: Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Fill ``row`` with the metrics of one explanation of one image; returns its curves.

    Raises:
        ExplainzooError: the explainer returns a grid, or a metric refused the input.
    """
    if exp.kind != "map" or exp.maps is None or exp.targets is None:
        raise ExplainzooError(f"{row.explainer} returns a grid, not a map: nothing to evaluate")
    t = int(exp.targets[0])
    label = bb.labels[t] if 0 <= t < len(bb.labels) else (exp.target_description or "")
    row.layer, row.target, row.label = exp.layer or "", t, label
    follow = _followed(exp)  # the curves measure the explained score itself
    d = deletion(bb, x, exp.maps, follow, steps, batch_size=batch_size)
    i = insertion(bb, x, exp.maps, follow, steps, batch_size=batch_size)
    row.deletion_auc, row.insertion_auc = d.mean_auc, i.mean_auc
    row.forward_passes = d.forward_passes + i.forward_passes
    if sanity_steps:
        s = cascading_randomization(explainer, bb, x, target=follow, steps=sanity_steps, seed=seed,
                                    original=exp.maps)
        row.sanity_spearman, row.sanity_ssim = s.mean_spearman, s.mean_ssim
    if mask is not None:
        row.pointing = float(pointing_game(exp.maps, mask=mask).float().mean())
    return {"deletion": d.probs[0].numpy(), "insertion": i.probs[0].numpy(), "fractions": d.fractions.numpy()}


def _followed(exp: Explanation) -> Any:
    """What a metric follows for ``exp``: its resolved target (the same score), else its classes."""
    return exp.target if exp.target is not None else exp.targets


def chance_row(
    row: Row, bb: Backbone, x: Tensor, target: Any, resolution: tuple[int, int] | None, steps: int = 20,
    trials: int = 1, seed: int = 0, batch_size: int = 16, mask: Tensor | None = None,
    reference: Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Fill ``row`` with the chance level of one image (random maps); returns the mean curves.

    ``reference`` (a real map) adds the Spearman / SSIM of random maps against it.
    """
    dels, ins, pts, rhos, ssims = [], [], [], [], []
    for k in range(trials):
        rm = random_maps(1, tuple(x.shape[-2:]), resolution, seed=seed * 1000 + k)
        d = deletion(bb, x, rm, target, steps, batch_size=batch_size)
        i = insertion(bb, x, rm, target, steps, batch_size=batch_size)
        target = d.targets
        dels.append(d.probs[0])
        ins.append(i.probs[0])
        row.forward_passes += d.forward_passes + i.forward_passes
        if mask is not None:
            pts.append(float(pointing_game(rm, mask=mask)[0]))
        if reference is not None:
            rhos.append(float(spearman(reference, rm)[0]))
            ssims.append(float(ssim(reference, rm)[0]))
    dc, ic = torch.stack(dels).mean(0), torch.stack(ins).mean(0)
    row.deletion_auc = float(torch.trapezoid(dc, d.fractions))
    row.insertion_auc = float(torch.trapezoid(ic, d.fractions))
    row.target = int(target[0])
    row.label = bb.labels[row.target]
    if pts:
        row.pointing = float(np.mean(pts))
    if rhos:
        row.sanity_spearman, row.sanity_ssim = float(np.mean(rhos)), float(np.mean(ssims))
    return {"deletion": dc.numpy(), "insertion": ic.numpy(), "fractions": d.fractions.numpy()}


def _evaluate_image(
    ev: Evaluation, name: str, image: Any, bb: Backbone, methods: Sequence[tuple[str, Explainer]],
    settings: Mapping[str, Any], progress: Callable[[str], None] | None,
) -> None:
    """Every explainer on one image and backbone, then the chance row."""
    steps, sanity_steps, seed, bs = (settings[k] for k in ("steps", "sanity_steps", "seed", "batch_size"))
    shown = bb.preprocessing.resize_crop(image)
    x = bb.preprocessing.normalize(shown)[None].float()
    mask = input_box_mask(bb, image, settings["box"]) if settings["box"] is not None else None
    key = (name, bb.name)
    ev.curves[key], ev.maps[key], ev.inputs[key] = {}, {}, shown
    target: Tensor | None = None
    reference: Tensor | None = None
    for ex_name, ex in methods:
        row = Row(name, bb.name, bb.weights, ex_name)
        try:
            exp = ex.explain(bb, x)
            curves = evaluate_explanation(row, ex, bb, x, exp, steps, sanity_steps, seed, bs, mask)
            target = exp.targets if target is None else target
            reference = exp.maps if reference is None else reference
            ev.fractions = curves.pop("fractions")
            ev.curves[key][ex_name] = curves
            ev.maps[key][ex_name] = exp.maps[0]  # type: ignore[index]
        except (BackboneBusy, DeadlineExceeded):
            raise  # the whole call's condition, not this pair's
        except ExplainzooError as exc:
            row.error = str(exc)
        ev.rows.append(row)
        if progress:
            progress(f"{bb.name} {name} {ex_name}")
    res = layer_resolution(bb)
    row = Row(name, bb.name, bb.weights, RANDOM, layer=f"noise {res[0]}x{res[1]}" if res else "pixel noise")
    try:
        curves = chance_row(row, bb, x, target, res, steps, settings["trials"], seed, bs, mask,
                            reference if sanity_steps > 0 else None)
        ev.fractions = curves.pop("fractions")
        ev.curves[key][RANDOM] = curves
    except (BackboneBusy, DeadlineExceeded):
        raise
    except ExplainzooError as exc:
        row.error = str(exc)
    ev.rows.append(row)
    if progress:
        progress(f"{bb.name} {name} random")


def evaluate(
    images: Sequence[tuple[str, Any]],
    backbones: Sequence[Backbone],
    explainers: Sequence[str],
    steps: int = 20,
    sanity_steps: int = 3,
    trials: int = 2,
    box: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Evaluation:
    """Measure every image x backbone x explainer (see the module docstring for the cost).

    Args:
        images: (name, image) pairs; an image is anything ``preprocess`` takes.
        backbones: the backbones to compare.
        explainers: registry names of map explainers (grid explainers are an error row).
        steps: deletion / insertion steps (at most ``MAX_STEPS``).
        sanity_steps: cascade points of the sanity check; 0 skips it.
        trials: random maps per image for the chance row.
        box: (x0, y0, x1, y1) in the original images' pixels: adds the pointing game.
        seed: seeds the random maps and the re-initialisations.
        progress: called with a short description after each unit of work
            (``len(images) * len(backbones) * (len(explainers) + 1)`` units).
        options: explainer name -> its options (e.g. a host's capped ones);
            explainers not named here run with their defaults.
    """
    from .. import create_explainer

    check_settings(steps, sanity_steps, trials)
    if not images or not backbones or not explainers:
        raise ExplainzooError("evaluate needs at least one image, one backbone and one explainer")
    methods = [(m, create_explainer(m, **dict((options or {}).get(m, {})))) for m in explainers]
    settings = {
        "steps": steps, "sanity_steps": sanity_steps, "trials": trials, "seed": seed,
        "batch_size": batch_size, "box": list(box) if box is not None else None,
        "deletion": "towards 0 in normalised space (the dataset mean colour)",
        "insertion": "from a Gaussian-blurred copy (sigma 5 px)",
    }
    ev = Evaluation(settings=settings)
    for bb in backbones:
        for name, image in images:
            _evaluate_image(ev, name, image, bb, methods, settings, progress)
    return ev


def summary(ev: Evaluation) -> list[dict[str, Any]]:
    """Rows averaged over images, one per backbone x explainer (random last per backbone)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in ev.rows:
        groups.setdefault((r.backbone, r.explainer), []).append(r)
    backbones = list(dict.fromkeys(r.backbone for r in ev.rows))
    out = []
    for bname, ex in sorted(groups, key=lambda k: (backbones.index(k[0]), k[1] == RANDOM)):
        rows = groups[(bname, ex)]

        def mean(attr: str, rows: list[Row] = rows) -> float | None:
            vals = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
            return float(np.mean(vals)) if vals else None

        out.append({
            "backbone": bname, "weights": rows[0].weights, "explainer": ex, "images": len(rows),
            "deletion_auc": mean("deletion_auc"), "insertion_auc": mean("insertion_auc"),
            "sanity_spearman": mean("sanity_spearman"), "sanity_ssim": mean("sanity_ssim"),
            "pointing": mean("pointing"),
            "errors": "; ".join(sorted({r.error for r in rows if r.error})),
        })
    return out


@dataclass(frozen=True)
class Faithfulness:
    """One map's deletion / insertion AUCs next to the chance level (random maps)."""

    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    forward_passes: int


def faithfulness(
    backbone: Backbone, x: Tensor, exp: Explanation, steps: int = 16, trials: int = 1, seed: int = 0,
) -> Faithfulness:
    """The AUCs of ``exp``'s map and of smooth random maps at the resolution of ``exp.raw``.

    ``steps`` is clamped to ``MAX_STEPS``. Cost: ``2*(steps+1)*(1+trials)``
    images through the model.
    """
    if exp.kind != "map" or exp.maps is None:
        raise ExplainzooError(f"{exp.method} returns a grid, not a map: no faithfulness numbers")
    steps = max(1, min(int(steps), MAX_STEPS))
    d = deletion(backbone, x, exp.maps, _followed(exp), steps)
    i = insertion(backbone, x, exp.maps, _followed(exp), steps)
    res = tuple(exp.raw.shape[-2:]) if exp.raw is not None else None
    chance = random_baseline(backbone, x, d.targets, resolution=res, steps=steps, trials=trials, seed=seed)
    passes = d.forward_passes + i.forward_passes + 2 * trials * x.shape[0] * (steps + 1)
    return Faithfulness(d.mean_auc, i.mean_auc, chance["deletion_auc"], chance["insertion_auc"], passes)
