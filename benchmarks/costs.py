"""A-priori cost of one call, from what the explainers declare, to skip what cannot fit.

An explainer option declares how it scales a call (``Option.cost``):
``"passes"`` (one pass per unit of the value: samples, steps, masks,
channels), ``"inverse"`` (a sliding window's side and step: fewer passes the
larger they are) or ``"batch"`` (memory per chunk, not time). The estimate
multiplies the passes these options imply by the cost of one pass measured
in this run (F, or F+B for the methods timed against samples x F+B), so a
plugin's costly option is estimated with no change here.

What no declaration can say stays here, keyed off the declarations where
possible:

* what an option's ``unbounded`` value (``max_channels=0``) means in passes:
  the layer's channel count, which only the backbone knows;
* the libraries run the method exactly, i.e. every declared option at its
  unbounded value;
* Ablation-CAM's sweep of every channel, which no option controls
  (:data:`CHANNEL_SWEEPS`).

Rough on purpose: it decides what is skipped, never a reported figure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import rivals as R


def _ablation_passes(ours: bool, cfg: dict[str, Any], channels: int) -> float:
    # ours with trunk_once: one trunk pass, then only the layers above the target per channel
    if ours and cfg.get("trunk_once", True):
        return 1 + 0.05 * channels
    return float(channels)


#: Passes per image that no option declares: method -> f(ours, config, channels).
CHANNEL_SWEEPS: dict[str, Callable[[bool, dict[str, Any], int], float]] = {
    "ablationcam": _ablation_passes,
}


def _count(option: Any, value: Any, channels: int, exact: bool) -> float:
    """Passes one ``cost="passes"`` option implies; its unbounded value means every channel."""
    unbounded = getattr(option, "unbounded", None)
    if not value or value == unbounded:  # no limit (0 where nothing is declared): every channel
        return float(channels)
    if unbounded is None:
        return float(value)
    return float(channels if exact else min(value, channels))


def window_count(cfg: dict[str, Any], hw: tuple[int, int]) -> int:
    """Positions of our sliding window (``window``/``stride``, 0: automatic) over ``hw``."""
    window, stride = R.window_settings(cfg, hw)
    h, w = hw
    return ((h - window) // stride + 2) * ((w - window) // stride + 2)


def declared_passes(cls: type, cfg: dict[str, Any], channels: int, hw: tuple[int, int],
                    exact: bool = False) -> float | None:
    """Passes per image that ``cls``'s cost-declaring options imply with ``cfg``.

    Args:
        cls: the explainer class (its ``options``).
        cfg: option values (missing ones take the declared default).
        channels: channels of the target layer (what an unbounded value means).
        hw: the input's height and width (for sliding windows).
        exact: every unbounded option at its unbounded value (the libraries).

    Returns:
        The product of the passes, or None when no option declares passes.
    """
    passes, declared = 1.0, False
    inverse: dict[str, Any] = {}
    for name, option in getattr(cls, "options", {}).items():
        cost = getattr(option, "cost", None)
        value = cfg.get(name, option.default)
        if cost in ("passes", "gradients"):
            passes *= _count(option, value, channels, exact)
            declared = True
        elif cost == "inverse":
            inverse[name] = value
    if inverse:
        passes *= window_count(inverse, hw)
        declared = True
    return passes if declared else None


def estimate_s(method: str, library: str, cell: R.Cell, f_img: float, fb_img: float,
               channels: int, options: dict[str, Any] | None = None) -> float:
    """A-priori seconds of one call of ``method`` by ``library`` ("ours" or a rival).

    Args:
        method: the registered explainer name.
        library: "ours" or a library of :data:`rivals.LIBRARIES`.
        cell: the cell (batch, input size, our configuration).
        f_img, fb_img: seconds per image of F and F+B in this run.
        channels: channels of the cell's layer.
        options: a variant's options over our defaults.

    Returns:
        Seconds; 0.0 for a method whose cost no declaration scales (one pass: cheap).
    """
    from explainzoo.explainers import explainer_class

    ours = library == "ours"
    cfg = {**cell.ours_config, **(options or {})}
    if method in CHANNEL_SWEEPS:
        passes: float | None = CHANNEL_SWEEPS[method](ours, cfg, channels)
    else:
        passes = declared_passes(explainer_class(method), cfg, channels, cell.input_hw, exact=not ours)
    if passes is None:
        return 0.0
    unit = fb_img if method in R.SAMPLED else f_img
    return cell.x.shape[0] * passes * unit
