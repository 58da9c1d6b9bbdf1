"""What a benchmark run covers and how long it may take: zoo names, modes, the run clock.

A :class:`Mode` holds every budget of a run; ``--quick`` picks :data:`QUICK`,
the other flags of ``python -m benchmarks.run`` override single fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import rivals as R
from .timing import CLOCKS, time_call

DEFAULT_BACKBONES = (
    "timm:tf_efficientnet_lite0",
    "timm:resnet50",
    "timm:vit_small_patch16_224",
    "vgg11_ref",
)
SHORT = {
    "timm:tf_efficientnet_lite0": "EfficientNet-Lite0",
    "timm:resnet50": "ResNet-50",
    "timm:vit_small_patch16_224": "ViT-S/16",
    "vgg11_ref": "vgg11_ref",
    "timm:test_resnet": "test_resnet (tiny)",
    "timm:test_efficientnet": "test_efficientnet (tiny)",
}
PRETRAINED = {"timm:tf_efficientnet_lite0"}
#: Small enough that 200 calls of a perturbation method fit the leak budget.
TINY_BACKBONE = "timm:test_resnet"
#: Memory is measured (one extra call per implementation) only where a target needs it.
MEMORY_METHODS = {"gradcam", "scorecam"}
#: Keys of the baselines timed inside a cell (not implementations of the method).
BASELINE_KEYS = ("F", "F+B", "S*F+B")
#: The error of a cell the deadline left out.
NOT_RUN = "not run: time limit of the run"
#: Methods in report order: the issue's targets first (cheapest first), then the rest.
PRIORITY = (*R.GRADIENT_CAMS, "saliency", "smoothgrad", "integrated_gradients", "ablationcam",
            "scorecam", *R.RIVALS)


def priority(method: str) -> int:
    """Position of ``method`` in :data:`PRIORITY` (anything new comes last)."""
    return PRIORITY.index(method) if method in PRIORITY else len(PRIORITY)


def short(backbone: str) -> str:
    """The report's name of a zoo entry."""
    return SHORT.get(backbone, backbone)


@dataclass
class Mode:
    """Budgets of a run.

    Attributes:
        cell_budget_s: aim for this many seconds of timed rounds per cell.
        cell_cap_s: skip a rival whose first call is estimated above this.
        mem_budget_s: measure peak memory (one extra call each) when a round costs less.
        deadline_s: cells stop being started after this (minus the leak reserve).
        single_round_s: above this per round, the first calls are the measurement.
    """

    name: str
    backbones: tuple[str, ...]
    batches: tuple[int, ...]
    cell_budget_s: float
    cell_cap_s: float
    mem_budget_s: float
    min_rounds: int
    max_rounds: int
    leak_calls: int
    leak_budget_s: float
    baseline_rounds: int
    deadline_s: float
    leak_reserve_s: float
    single_round_s: float = 30.0


FULL = Mode("full", DEFAULT_BACKBONES, (1, 8), cell_budget_s=5.0, cell_cap_s=45.0,
            mem_budget_s=60.0, min_rounds=3, max_rounds=9, leak_calls=200, leak_budget_s=12.0,
            baseline_rounds=7, deadline_s=28 * 60, leak_reserve_s=240.0)
QUICK = Mode("quick", ("timm:tf_efficientnet_lite0", TINY_BACKBONE), (1, 8), cell_budget_s=1.0,
             cell_cap_s=3.0, mem_budget_s=2.0, min_rounds=2, max_rounds=3, leak_calls=30,
             leak_budget_s=1.0, baseline_rounds=3, deadline_s=120.0, leak_reserve_s=25.0,
             single_round_s=3.0)

# -- the run's clock (``--clock``) ----------------------------------------------------

_CLOCK = {"name": "wall"}


def set_clock(name: str) -> None:
    """Select the clock every timed call of this run uses (a key of ``CLOCKS``)."""
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}; have {sorted(CLOCKS)}")
    _CLOCK["name"] = name


def clock_name() -> str:
    """The clock selected by :func:`set_clock`."""
    return _CLOCK["name"]


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """One call of ``fn`` by the run's clock."""
    return time_call(fn, sync, now=CLOCKS[_CLOCK["name"]])
