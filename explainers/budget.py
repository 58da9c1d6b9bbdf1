"""What one explainer call costs, estimated from what its options declare.

:meth:`Explainer.estimate(backbone, x_shape, layer)
<explainzoo.explainers.base.Explainer.estimate>` returns a :class:`Cost`:
passes of the whole model per image and the most images one pass sees.
It is computed from declarations, never from option names:

* ``base_passes`` (a class attribute, default 1): the passes the method
  makes whatever its options (the clean or gradient pass; Guided Grad-CAM 2);
* every option declared with ``cost="passes"`` adds its *effective* value
  (:meth:`Explainer.effective`): the value itself by default, ``math.inf``
  for the option's ``unbounded`` value unless the method says what that
  means (Score-CAM: ``max_channels=0`` is every channel of the layer);
* options with ``cost="inverse"`` (a window, a stride) add the largest of
  their effective values: ``ceil(H/v) * ceil(W/v)`` by default (a grid with
  spacing v), the method's exact count where it overrides ``effective``
  (Occlusion: its windows);
* :meth:`Explainer.extra_passes`: work no option spells (Ablation-CAM: one
  pass per channel of the layer);
* ``cost="batch"`` options bound the images of one pass: ``batch`` is the
  largest of N and ``min(value, passes)``.

A host multiplies ``Cost.total`` by the backbone's size (parameters, or a
measured forward time) to cap a request, and ``Cost.batch`` by the memory one
image's activations take to cap its peak memory; ``Cost.by_option`` says
which option to lower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from explainzoo.backbones import Backbone, ExplainzooError

from .options import Option

if TYPE_CHECKING:
    from .base import Explainer

__all__ = ["Cost", "default_effective", "estimate_cost", "input_shape", "layer_channels"]


@dataclass(frozen=True)
class Cost:
    """The estimated cost of one call (an upper bound, from declarations).

    Attributes:
        passes: passes of the whole model per image; a forward pass and a
            forward-and-backward pass count one each. A whole number, or
            ``math.inf`` when an option's ``unbounded`` value has no bound the
            method can name (a host must refuse it).
        batch: the most images (copies) the model sees in one pass: the peak
            memory of a chunk is about ``batch`` x one image's activations.
        images: N, the images of the call.
        by_option: the passes per image each cost option adds (``"passes"``
            and ``"inverse"`` options, by name), to name the cheaper setting.
    """

    passes: float
    batch: int
    images: int = 1
    by_option: Mapping[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Passes of the whole call: ``passes * images``."""
        return self.passes * self.images

    def costliest(self) -> str | None:
        """The option that adds the most passes (None when no option adds any)."""
        live = {k: v for k, v in self.by_option.items() if v > 0}
        return max(live, key=live.__getitem__) if live else None


def input_shape(x_shape: Any, bb: Backbone) -> tuple[int, tuple[int, int]]:
    """(N, (H, W)) of an input shape (N,3,H,W) or (3,H,W); None: one image at the backbone's size."""
    if x_shape is None:
        return 1, bb.input_size
    try:
        dims = [int(d) for d in x_shape]
    except (TypeError, ValueError):
        raise ExplainzooError(f"x_shape must be (N,3,H,W) or (3,H,W), got {x_shape!r}") from None
    if len(dims) == 3:
        dims = [1, *dims]
    if len(dims) != 4 or min(dims) < 1:
        raise ExplainzooError(f"x_shape must be (N,3,H,W) or (3,H,W) with sizes >= 1, got {tuple(dims)}")
    return dims[0], (dims[2], dims[3])


def layer_channels(bb: Backbone, layer: str | None) -> int:
    """Channels of a resolved layer's map, from the backbone's probe (no extra pass once probed)."""
    if layer is None:
        raise ExplainzooError("this explainer needs a layer to estimate its cost")
    return bb.layer_format(layer).channels


def default_effective(option: Option, value: Any, hw: tuple[int, int]) -> float:
    """Passes per image of one cost option's value, by its declaration alone.

    ``"passes"``: the value (``math.inf`` for ``unbounded``). ``"inverse"``:
    ``ceil(H/v) * ceil(W/v)``; 0 or less ("automatic") counts as the default's
    grid, or one pass when the default is automatic too. ``"batch"``: 0.
    """
    if option.unbounded is not None and value == option.unbounded:
        return math.inf
    if option.cost in ("passes", "gradients"):
        return float(value)
    if option.cost == "inverse":
        v = value if isinstance(value, (int, float)) and value > 0 else option.default
        if not (isinstance(v, (int, float)) and v > 0):
            return 1.0
        return float(math.ceil(hw[0] / v) * math.ceil(hw[1] / v))
    return 0.0


def estimate_cost(explainer: Explainer, bb: Backbone, n: int, hw: tuple[int, int], layer: str | None) -> Cost:
    """The :class:`Cost` of ``explainer`` (its configured options) on N images of size ``hw``."""
    by_option: dict[str, float] = {}
    inverse: list[float] = []
    batch_values: list[int] = []
    for name, option in explainer.cost_options().items():
        value = explainer.config[name]
        if option.cost == "batch":
            batch_values.append(int(value))
            continue
        eff = float(explainer.effective(name, value, bb, hw, layer))
        by_option[name] = eff
        if option.cost == "inverse":
            inverse.append(eff)
    passes = float(explainer.base_passes) + float(explainer.extra_passes(bb, hw, layer))
    passes += sum(v for k, v in by_option.items() if explainer.options[k].cost in ("passes", "gradients"))
    passes += max(inverse, default=0.0)
    chunk = int(min(min(batch_values), passes)) if batch_values else 1  # min(...) is finite
    return Cost(passes=passes, batch=max(n, chunk), images=n, by_option=by_option)
