"""Pure measurement helpers: interleaved timing, medians, RSS, agreement.

Nothing here imports a rival library or builds a model, so the unit test
``tests/test_benchmarks_harness.py`` can exercise every function on tiny
inputs without the ``bench`` extra.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from explainzoo.demo.memory import glibc

# -- interleaving ------------------------------------------------------------


def interleave_order(names: Sequence[str], rounds: int) -> list[str]:
    """The call order of an interleaved measurement: ``rounds`` rounds of every name.

    Each round calls every implementation once (ours, theirs, ours, theirs, ...);
    the starting point rotates by one each round so no implementation always
    runs right after the same neighbour (cache state, turbo, other load).
    """
    if rounds < 0:
        raise ValueError("rounds must be >= 0")
    k = len(names)
    order: list[str] = []
    for r in range(rounds):
        start = r % k if k else 0
        order.extend(names[(start + i) % k] for i in range(k))
    return order


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    if dev.type == "mps":
        return torch.mps.synchronize
    return lambda: None


#: ``wall``: elapsed time (the default; the only meaningful one on a GPU).
#: ``cpu``: this process's CPU time: on a shared machine it leaves out the
#: time spent waiting for a core, so with one torch thread (``--threads 1``)
#: ratios stay meaningful under other load.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_call(
    fn: Callable[[], object],
    sync: Callable[[], None] = lambda: None,
    now: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds for one call of ``fn`` by the clock ``now``, device work included."""
    sync()
    t0 = now()
    fn()
    sync()
    return now() - t0


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[Callable[[], object], Callable[[], None]], float] = time_call,
) -> dict[str, list[float]]:
    """Time every callable ``rounds`` times, interleaved in one process.

    ``warmup`` untimed interleaved rounds come first. Returns name -> the
    list of per-call seconds in the order they ran. ``clock`` is injectable
    for tests.
    """
    names = list(calls)
    for name in interleave_order(names, warmup):
        calls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one timed call would land on whoever ran then
    try:
        for name in interleave_order(names, rounds):
            times[name].append(clock(calls[name], sync))
    finally:
        if was_enabled:
            gc.enable()
    return times


def median(values: Sequence[float]) -> float:
    """The median, NaN for an empty sequence."""
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either is missing or b is zero."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return math.nan
    return a / b


def plan_rounds(
    seconds_per_round: float, budget_s: float, min_rounds: int = 3, max_rounds: int = 15
) -> int:
    """How many interleaved rounds fit ``budget_s``, within [min_rounds, max_rounds]."""
    if not math.isfinite(seconds_per_round) or seconds_per_round <= 0:
        return max_rounds
    return int(max(min_rounds, min(max_rounds, budget_s // seconds_per_round)))


def geomean(values: Sequence[float]) -> float:
    """Geometric mean of the finite positive values (NaN when there are none)."""
    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not vals:
        return math.nan
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


# -- agreement ---------------------------------------------------------------


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max normalisation of (N,H,W) maps to [0,1]; constant maps -> 0."""
    m = maps.detach().double().flatten(1)
    lo = m.min(dim=1, keepdim=True).values
    hi = m.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (m - lo) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
    return out.view(maps.shape)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson r per map of two (N,H,W) stacks, after min-max normalisation.

    Two constant maps agree (r = 1); one constant and one not give NaN.
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    x = minmax(a).flatten(1)
    y = minmax(b).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    sx = x.norm(dim=1)
    sy = y.norm(dim=1)
    r = (x * y).sum(dim=1) / (sx * sy)
    both_const = (sx == 0) & (sy == 0)
    one_const = (sx == 0) ^ (sy == 0)
    r = torch.where(both_const, torch.ones_like(r), r)
    return torch.where(one_const, torch.full_like(r, math.nan), r)


def agreement(a: Tensor, b: Tensor) -> float:
    """The worst per-image Pearson r of two map stacks (NaN if any is undefined)."""
    r = pearson(a.cpu(), b.cpu())
    if torch.isnan(r).any():
        return math.nan
    return float(r.min())


# -- memory ------------------------------------------------------------------

_STATUS = Path("/proc/self/status")


def _status_kb(key: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; else the peak from resource)."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss`, in MiB."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The static mmap threshold every timing runs under (glibc's dynamic one ends
#: near its 32 MiB ceiling after a few large tensors anyway; fixing it makes
#: the regime the same for every implementation, whatever ran before).
TIMING_MMAP_THRESHOLD = 32 * 2**20


def set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold (False where not glibc)."""
    libc = glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(nbytes)))
    libc.mallopt(_M_TRIM_THRESHOLD, int(2 * nbytes))
    return ok


@contextmanager
def exact_heap() -> Iterator[bool]:
    """Make RSS follow live memory for one measurement (yields whether it could).

    Blocks of 64 KiB and more are mmapped (returned to the system when freed)
    and free heap memory is trimmed first, so the kernel's peak-RSS mark is the
    call's real peak rather than whatever an earlier call left cached in the
    heap. Slower (page faults): only for memory measurements, never timings.
    """
    libc = glibc()
    if libc is None:
        yield False
        return
    set_mmap_threshold(64 * 1024)
    gc.collect()
    libc.malloc_trim(0)
    try:
        yield True
    finally:
        set_mmap_threshold(TIMING_MMAP_THRESHOLD)


@dataclass
class PeakMemory:
    """Peak RSS above the starting RSS during one block (MiB)."""

    start_mb: float
    peak_mb: float
    exact: bool

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


def measure_peak(fn: Callable[[], object]) -> PeakMemory:
    """Run ``fn`` once and report how far the RSS rose above its start.

    Exact (kernel high-water mark) where /proc/self/clear_refs can reset it;
    otherwise the process-wide peak, which only bounds the growth from above.
    """
    with exact_heap() as heap_ok:
        exact = reset_peak_rss() and heap_ok
        start = rss_mb()
        fn()
        return PeakMemory(start, peak_rss_mb(), exact)


@dataclass
class LeakReport:
    """What ``calls`` calls did to the process (after warm-up)."""

    calls: int
    rss_growth_mb: float
    peak_growth_mb: float
    hooks_before: int
    hooks_after: int
    per_call_s: float
    samples_mb: list[float] = field(default_factory=list)

    @property
    def hooks_left(self) -> int:
        return self.hooks_after - self.hooks_before


def leak_check(
    fn: Callable[[], object],
    calls: int,
    warmup: int = 10,
    hooks: Callable[[], int] = lambda: 0,
    sample_every: int = 25,
) -> LeakReport:
    """RSS growth and hooks left over ``calls`` calls after ``warmup`` calls.

    Warm-up first: allocators and libraries grow once on their first calls
    (pytorch-grad-cam's RSS rises ~120 MB over its first ~10 calls) and that
    is not a leak. Growth is the RSS after the calls minus before, both after
    a garbage collection.
    """
    h0 = hooks()
    for _ in range(warmup):
        fn()
    gc.collect()
    reset_peak_rss()
    start = rss_mb()
    samples = [start]
    t0 = time.perf_counter()
    for i in range(calls):
        fn()
        if sample_every and (i + 1) % sample_every == 0:
            samples.append(rss_mb())
    per_call = (time.perf_counter() - t0) / max(calls, 1)
    gc.collect()
    end = rss_mb()
    return LeakReport(calls, end - start, peak_rss_mb() - start, h0, hooks(), per_call, samples)
