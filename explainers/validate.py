"""The template's check of every explainer's result (built-in or plugin).

:meth:`Explainer.explain <explainzoo.explainers.base.Explainer.explain>` runs
:func:`check_result` on what a method returned, and
:class:`~explainzoo.explainers.base.AttributionExplainer` runs
:func:`check_attribution` on its raw map before upsampling, so a plugin's
malformed output is one :class:`ExplainerContractError` naming the explainer
at fault instead of wrong pictures or a torch error further on. The checks are
cheap: shapes and dtypes, plus one ``aminmax`` over the maps (it proves them
finite and within [0, 1]) and one ``isfinite`` over the scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from explainzoo.backbones import ExplainzooError

from .result import Explanation

__all__ = ["ExplainerContractError", "check_attribution", "check_result", "check_tiles"]


class ExplainerContractError(ExplainzooError):
    """An explainer returned a result that breaks the template's contract (a bug in it)."""


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


class _Checker:
    """Raises :class:`ExplainerContractError` for one explainer's call."""

    def __init__(self, explainer: Any, n: int) -> None:
        self.name = getattr(explainer, "name", "") or type(explainer).__name__
        module = type(explainer).__module__
        self.fault = (
            f"a bug in explainzoo's '{self.name}'; please report it"
            if module.startswith("explainzoo.")
            else f"a bug in the plugin '{self.name}' ({module}); report it to its author"
        )
        self.n = n

    def fail(self, what: str) -> None:
        raise ExplainerContractError(f"explainer '{self.name}' returned {what} ({self.fault})")

    def rows(self, t: Any, field: str, ndim: int, plural: str) -> None:
        """``t`` is an ``ndim``-D tensor with one row per image."""
        if not isinstance(t, Tensor) or t.ndim != ndim:
            self.fail(f"{field} of shape {_shape(t)}, expected a {ndim}-D tensor with one row per image")
        if t.shape[0] != self.n:
            self.fail(f"{t.shape[0]} {plural} for a batch of {self.n}: {field} of shape {_shape(t)}")

    def unit(self, t: Tensor, field: str) -> None:
        """float32, finite, within [0, 1] (one aminmax: NaN and inf show in it)."""
        if t.dtype != torch.float32:
            self.fail(f"{field} of dtype {t.dtype}, expected float32")
        if t.numel():
            lo, hi = (float(v) for v in torch.aminmax(t))
            if not (0.0 <= lo <= hi <= 1.0):
                self.fail(f"{field} with values in [{lo:g}, {hi:g}], expected finite values in [0, 1]")

    def targets(self, targets: Any, scores: Any, classes: int | None) -> None:
        """(N,) integer targets (-1: a target that is no class) within the classes; (N,) finite scores."""
        if targets is not None:
            self.rows(targets, "targets", 1, "targets")
            if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
                self.fail(f"targets of dtype {targets.dtype}, expected class indices (integers)")
            if targets.numel():
                lo, hi = int(targets.min()), int(targets.max())
                if lo < -1 or (classes and hi >= classes):
                    self.fail(f"target {lo if lo < -1 else hi} for a model with {classes} classes")
        if scores is not None:
            self.rows(scores, "scores", 1, "scores")
            if not (scores.dtype.is_floating_point and bool(torch.isfinite(scores).all())):
                self.fail(f"non-finite or non-float scores {scores.tolist()[:4]}")


def check_attribution(explainer: Any, raw: Any, n: int) -> None:
    """The raw (N,h,w) map of ``attribute`` before the template upsamples it."""
    c = _Checker(explainer, n)
    c.rows(raw, "raw map", 3, "maps")
    if min(raw.shape[1:]) < 1 or raw.is_complex():
        c.fail(f"a raw map of shape {_shape(raw)} and dtype {raw.dtype}")


def check_tiles(explainer: Any, tiles: Any, n: int) -> None:
    """The (N,K,C,h,w) tiles of ``tiles`` before the template lays them out (C is 1 or 3)."""
    c = _Checker(explainer, n)
    c.rows(tiles, "tiles", 5, "tile sets")
    if tiles.shape[2] not in (1, 3) or min(tiles.shape[1:]) < 1 or tiles.is_complex():
        c.fail(f"tiles of shape {_shape(tiles)}, expected (N, K, 1 or 3, h, w)")


def check_result(explainer: Any, exp: Any, n: int, hw: tuple[int, int], classes: int | None) -> None:
    """A whole result: kind, maps or grid, targets, scores and logits for N images of size ``hw``.

    Args:
        classes: the model's class count (None or 0: no range check on targets).

    Raises:
        ExplainerContractError: naming the explainer and the field at fault.
    """
    c = _Checker(explainer, n)
    if not isinstance(exp, Explanation):
        c.fail(f"a {type(exp).__name__}, expected an Explanation")
    kind = getattr(explainer, "kind", exp.kind)
    if exp.kind != kind:
        c.fail(f"an Explanation of kind {exp.kind!r}, but the explainer declares kind {kind!r}")
    if kind == "map":
        c.rows(exp.maps, "maps", 3, "maps")
        if tuple(exp.maps.shape[1:]) != tuple(hw):
            c.fail(f"maps of shape {_shape(exp.maps)}, expected {(n, *hw)} (the input's size)")
        c.unit(exp.maps, "maps")
        if exp.raw is not None:
            c.rows(exp.raw, "raw map", 3, "maps")
    else:
        c.rows(exp.grid, "grid", 4, "grids")
        if exp.grid.shape[1] not in (1, 3):
            c.fail(f"a grid of shape {_shape(exp.grid)}, expected (N, 1 or 3, GH, GW)")
        c.unit(exp.grid, "grid")
        if exp.tiles is not None:
            c.rows(exp.tiles, "tiles", 5, "tile sets")
    c.targets(exp.targets, exp.scores, classes)
    if exp.logits is not None and (not isinstance(exp.logits, Tensor) or exp.logits.shape[:1] != (n,)):
        c.fail(f"logits of shape {_shape(exp.logits)} for a batch of {n}")
