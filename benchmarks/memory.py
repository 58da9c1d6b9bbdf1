"""Peak memory of one call: RSS on CPU, the allocator's statistics on CUDA."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import rivals as R
from .timing import exact_heap, peak_rss_mb, reset_peak_rss, rss_mb


class MemoryProbe:
    """Peak memory above the start of one call (``begin()`` ... ``end()``)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.start = 0.0

    def begin(self) -> None:
        """Reset the peak and record the starting level."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            reset_peak_rss()
            self.start = rss_mb()

    def end(self) -> float:
        """MB of the peak since :meth:`begin` above its start."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.start
        return peak_rss_mb() - self.start


def measure_memory(impls: dict[str, R.Impl], device: torch.device,
                   sync: Callable[[], None]) -> dict[str, float]:
    """Peak memory above the start of one call of each (after the timed rounds)."""
    probe = MemoryProbe(device)
    peaks = {}
    for key, imp in impls.items():
        with exact_heap():
            probe.begin()
            imp.call()
            sync()
            peaks[key] = probe.end()
    return peaks
