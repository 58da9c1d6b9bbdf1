"""What a run measures, as plain dataclasses saved to and loaded from the run's JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .timing import median, ratio


@dataclass
class ImplResult:
    """One implementation's measurements in one cell.

    Attributes:
        times: seconds per call (the whole batch) of the timed rounds.
        peaks_mb: peak memory above the start of a call.
        r: agreement of its maps with ours.
        r_self: agreement of its first and last call (stochastic methods).
    """

    library: str
    api: str
    times: list[float]
    batch: int
    peaks_mb: list[float] = field(default_factory=list)
    r: float | None = None
    r_self: float | None = None
    note: str = ""

    @property
    def ms(self) -> float:
        """Median milliseconds per image."""
        return median(self.times) / self.batch * 1000

    @property
    def peak_mb(self) -> float:
        """Median peak memory per call (NaN when not measured)."""
        return median(self.peaks_mb) if self.peaks_mb else math.nan


@dataclass
class CellResult:
    """One (backbone, batch, method configuration): ours, the rivals and the baselines."""

    backbone: str
    batch: int
    method: str
    layer: str | None
    impls: dict[str, ImplResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    base_method: str = ""
    variant: dict[str, Any] = field(default_factory=dict)

    def ms(self, key: str) -> float:
        """Milliseconds per image of ``key`` (NaN when it did not run)."""
        res = self.impls.get(key)
        return res.ms if res else math.nan

    def vs(self, key: str) -> float:
        """ours / key (time per image)."""
        return ratio(self.ms("ours"), self.ms(key))


@dataclass
class LeakResult:
    """RSS growth and hooks left over many calls of one implementation."""

    method: str
    library: str
    backbone: str
    calls: int
    rss_growth_mb: float
    peak_growth_mb: float
    hooks_left: int | None
    per_call_ms: float
    note: str = ""


def cells_from_state(state: dict[str, Any]) -> list[CellResult]:
    """The cells of a run's saved state (its JSON)."""
    cells = []
    for c in state["cells"]:
        c = dict(c)
        impls = {k: ImplResult(**v) for k, v in c.pop("impls").items()}
        cells.append(CellResult(**c, impls=impls))
    return cells


def leaks_from_state(state: dict[str, Any]) -> list[LeakResult]:
    """The leak checks of a run's saved state."""
    return [LeakResult(**lk) for lk in state["leaks"]]
