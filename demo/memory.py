"""Give freed memory back to the system between requests (glibc hosts).

A long-running demo serves requests whose peaks differ by hundreds of MB (a
SmoothGrad batch of gradients, a RISE mask chunk). PyTorch frees those tensors
at the end of the request, but glibc keeps the freed pages in its heaps, one
heap (arena) per thread that ever allocated, up to ``8 x cores`` of them: a
server that has run each heavy request once on each of its worker threads
holds every peak at once, and its RSS climbs for hours before it plateaus
(measured in benchmarks/NOTES.md, "Soak").

:func:`limit_arenas` caps the arenas at server start (what the
``MALLOC_ARENA_MAX`` environment variable does, when the operator did not set
it); :func:`release_memory` hands free heap memory back after each request
(``malloc_trim(0)``: small against a request; figures in
benchmarks/NOTES.md, "Soak").
Both are no-ops where the C library is not glibc (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["glibc", "limit_arenas", "release_memory", "request_memory"]

_M_ARENA_MAX = -8  # glibc's mallopt parameter number for the arena cap
_depth = threading.local()


@functools.cache
def glibc() -> Any:
    """glibc through ctypes, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only: AttributeError elsewhere
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int = 2, environ: dict[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas at ``count`` unless ``MALLOC_ARENA_MAX`` is set.

    Args:
        count: arenas allowed (glibc's default is 8 per core).
        environ: the environment to consult (default ``os.environ``).

    Returns:
        Whether the cap was set here (False: not glibc, or the operator's
        ``MALLOC_ARENA_MAX`` already rules).
    """
    env = os.environ if environ is None else environ
    libc = glibc()
    if libc is None or env.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, int(count)))


def release_memory() -> bool:
    """Return free heap memory to the system (``malloc_trim(0)``); False where not glibc."""
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@contextmanager
def request_memory() -> Iterator[None]:
    """:func:`release_memory` when the outermost request of this thread ends (failed or not).

    Nested requests (a tab calling another, the landing explanation) trim once,
    at the outer exit, after their tensors are gone.
    """
    _depth.n = getattr(_depth, "n", 0) + 1
    try:
        yield
    finally:
        _depth.n -= 1
        if _depth.n == 0:
            release_memory()
