"""Explainer options: :class:`Option` and the options several methods share.

An option declares its default, bounds, a line of documentation and, when it
scales what a call costs, how (:data:`COSTS`). Hosts (the demo, a batch job)
cap costly options from these declarations, so a plugin's costly option is
capped with no change on their side: :meth:`Explainer.estimate
<explainzoo.explainers.base.Explainer.estimate>` turns them into passes per
image and images per pass (:mod:`explainzoo.explainers.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from explainzoo.backbones import ExplainzooError

#: How an option scales the cost of a call:
#: ``"passes"``: forward passes grow linearly with the value (masks, channels);
#: ``"gradients"``: forward-and-backward passes grow linearly with it (IG steps,
#: SmoothGrad samples: each unit costs about three forward passes); ``"batch"``: the peak memory of one chunk grows
#: with it (``batch_size``); ``"inverse"``: a smaller value means more passes
#: (an occlusion window or stride; 0 may mean "automatic").
COSTS = ("passes", "gradients", "batch", "inverse")


@dataclass(frozen=True)
class Option:
    """One explainer option: default, bounds, documentation and its cost.

    Attributes:
        default: the value when the option is not given; its type is the option's type.
        doc: one line for listings and the CLI.
        low, high: inclusive bounds (numbers).
        choices: the allowed values (strings).
        cost: how the value scales the call's cost, one of :data:`COSTS`, or None.
        unbounded: a value that lifts the bound (``max_channels=0``: every
            channel) and so means the most work; a host capping the option
            must treat it as larger than any cap. The estimate counts it as
            ``math.inf`` unless the method says what it means
            (``Explainer.effective``: Score-CAM counts the layer's channels).
            None: no such value.
    """

    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    cost: str | None = None
    unbounded: Any = None

    def __post_init__(self) -> None:
        if self.cost is not None and self.cost not in COSTS:
            raise ValueError(f"Option cost must be one of {list(COSTS)} or None, got {self.cost!r}")

    def coerce(self, name: str, value: Any) -> Any:
        """Validate ``value`` (strings from the CLI are converted).

        Raises:
            ExplainzooError: wrong type, not finite, out of bounds or not a choice.
        """
        kind = type(self.default)
        try:
            if isinstance(value, str) and kind is not str:
                if kind is bool:
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes")
                else:
                    value = kind(value)
            elif kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ExplainzooError(f"option {name}={value!r} must be a {kind.__name__}") from None
        if self.default is not None and not isinstance(value, kind):
            raise ExplainzooError(f"option {name}={value!r} must be a {kind.__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ExplainzooError(f"option {name}={value!r} must be a finite number")
        if self.choices is not None and value not in self.choices:
            raise ExplainzooError(f"option {name}={value!r} must be one of {list(self.choices)}")
        if self.low is not None and value < self.low:
            raise ExplainzooError(f"option {name}={value!r} must be >= {self.low}")
        if self.high is not None and value > self.high:
            raise ExplainzooError(f"option {name}={value!r} must be <= {self.high}")
        return value


#: Where a perturbation puts "nothing": values in model-input (normalised) space.
FILL_CHOICES = ("mean", "black")


def fill_option(default: str = "mean") -> Option:
    """The shared ``baseline`` option: what removed pixels are replaced with."""
    return Option(
        default,
        "value of removed pixels: 'mean' (zeros after normalisation: the dataset's mean colour) "
        "or 'black' (an all-black image through the backbone's normalisation)",
        choices=FILL_CHOICES,
    )


def batch_option(default: int = 8) -> Option:
    """The shared ``batch_size`` option: copies per forward pass (bounds memory)."""
    return Option(default, "perturbed copies per forward pass (bounds memory)", low=1, high=4096,
                  cost="batch")


def seed_option() -> Option:
    """The shared ``seed`` option of the randomised methods."""
    return Option(0, "seed of the random draws (the same for every image of a batch)", low=0, high=2**63 - 1)


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["steps=32", "rule = right"]`` -> ``{"steps": "32", "rule": "right"}`` (the CLI's ``--opt``).

    Values stay strings: :meth:`Option.coerce` converts them when the explainer is created.

    Raises:
        ExplainzooError: a pair without ``=``.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ExplainzooError(f"--opt takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out
