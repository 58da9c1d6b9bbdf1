"""Deadlines and cancellation for long explainer calls, checked cooperatively.

A :class:`Deadline` is an absolute point in time (``Deadline(60)``: 60 s from
now) with a cancellation flag. It is active for a block::

    with Deadline(60) as d:            # or explain(..., deadline=60)
        exp = explain("smoothgrad", bb, x, samples=64)
        curve = deletion(bb, x, exp.maps)

and the long loops check it between chunks (:func:`check_deadline`: every
:func:`~explainzoo.explainers.mechanics.chunks` iteration, so perturbation
chunks, IG/SmoothGrad batches and metric curves), raising
:class:`DeadlineExceeded` when it has passed or was cancelled (``d.cancel()``
from another thread, e.g. when the client disconnected). Deadlines nest: every
active one is checked. They live in a :class:`contextvars.ContextVar`, so no
method signature carries them and a thread only sees its own (a worker
thread started inside the block must copy the context:
``contextvars.copy_context().run``).

:func:`acquire` takes a backbone's lock within the remaining time, or raises
:class:`BackboneBusy`.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from explainzoo.backbones import ExplainzooError

__all__ = [
    "BackboneBusy", "Deadline", "DeadlineExceeded", "acquire", "as_deadlines", "check_deadline",
    "current_deadlines", "deadline_scope",
]


class DeadlineExceeded(ExplainzooError):
    """A call ran past its deadline or was cancelled; ``cancelled`` tells which."""

    def __init__(self, message: str, cancelled: bool = False) -> None:
        super().__init__(message)
        self.cancelled = cancelled


class BackboneBusy(ExplainzooError):
    """The backbone's lock was not free within the call's deadline."""


class Deadline:
    """An absolute deadline with a cancellation flag (thread-safe).

    Args:
        seconds: time allowed from now (a finite number > 0); None: no time
            limit, cancellation only.
        cancel: an outside cancellation token, checked with the deadline:
            anything with ``is_set()`` (a :class:`threading.Event`), a
            ``cancelled``/``expired`` attribute (another :class:`Deadline`) or a
            callable returning True once cancelled.
        lock_wait: the longest any backbone-lock wait under this deadline may
            take, seconds (None: up to the deadline). A host sets it so a
            request on a busy backbone is answered "busy" in seconds rather
            than queued for its whole deadline.

    Use it as a context manager to make it active for a block (see the module
    docstring), or pass it to ``explain(..., deadline=d)``.
    """

    def __init__(self, seconds: float | None = None, cancel: Any = None, lock_wait: float | None = None) -> None:
        self.seconds = _seconds(seconds, "deadline")
        self.lock_wait = _seconds(lock_wait, "lock_wait")
        self.start = time.monotonic()
        self.at = math.inf if self.seconds is None else self.start + self.seconds
        self._event = threading.Event()
        self._outside = cancel
        self._tokens = threading.local()

    def cancel(self) -> None:
        """Cancel: every check from now on raises :class:`DeadlineExceeded`."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called or the outside token is set."""
        if self._event.is_set():
            return True
        token = self._outside
        if token is None:
            return False
        if hasattr(token, "is_set"):
            hit = token.is_set()
        elif hasattr(token, "expired"):
            hit = token.expired
        elif callable(token):
            hit = token()
        else:
            hit = bool(getattr(token, "cancelled", False))
        if hit:
            self._event.set()
        return bool(hit)

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed or the call was cancelled."""
        return self.cancelled or time.monotonic() >= self.at

    def remaining(self) -> float:
        """Seconds left (``math.inf`` without a time limit, 0 once expired)."""
        if self.cancelled:
            return 0.0
        return max(0.0, self.at - time.monotonic())

    def check(self, what: str = "the call", hint: str = "use cheaper options") -> None:
        """Raise :class:`DeadlineExceeded` (naming ``what``) once expired."""
        if self.cancelled:
            raise DeadlineExceeded(f"{what} stopped: the request was cancelled", cancelled=True)
        if time.monotonic() >= self.at:
            raise DeadlineExceeded(
                f"{what} stopped after {self.seconds:g} s (deadline); {hint} or raise the deadline"
            )

    def __enter__(self) -> Deadline:
        stack = getattr(self._tokens, "stack", None)
        if stack is None:
            stack = self._tokens.stack = []
        stack.append(_ACTIVE.set(_ACTIVE.get() + (_Entry(self, None, None),)))
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.reset(self._tokens.stack.pop())

    def __repr__(self) -> str:
        limit = "no limit" if self.seconds is None else f"{self.seconds:g} s"
        return f"Deadline({limit}, remaining={self.remaining():.3g} s, cancelled={self.cancelled})"


def _seconds(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ExplainzooError(f"{what} must be a number of seconds > 0, got {value!r}")
    return float(value)


class _Entry(NamedTuple):
    deadline: Deadline | None
    what: str | None
    hint: str | None


#: Longest single wait for a lock, so a cancellation is noticed while waiting.
_POLL_S = 0.2

_ACTIVE: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
    "explainzoo_deadlines", default=()
)


def as_deadlines(deadline: Deadline | float | None = None, cancel: Any = None) -> tuple[Deadline, ...]:
    """The deadlines of ``explain(..., deadline=, cancel=)``: seconds or a Deadline, and a token."""
    out = []
    if deadline is not None:
        out.append(deadline if isinstance(deadline, Deadline) else Deadline(deadline))
    if cancel is not None:
        out.append(cancel if isinstance(cancel, Deadline) else Deadline(cancel=cancel))
    return tuple(out)


@contextmanager
def deadline_scope(*deadlines: Deadline, what: str | None = None, hint: str | None = None) -> Iterator[None]:
    """Make ``deadlines`` active for the block (none: only label the block).

    Args:
        what: how a :class:`DeadlineExceeded` raised inside names the work
            (the innermost label wins), e.g. ``"explainer 'smoothgrad'"``.
        hint: the cheaper setting it suggests, e.g. ``"lower samples"``.
    """
    entries = tuple(_Entry(d, what, hint) for d in deadlines) or (_Entry(None, what, hint),)
    token = _ACTIVE.set(_ACTIVE.get() + entries)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def current_deadlines() -> list[Deadline]:
    """The deadlines active in this context, outermost first."""
    return [e.deadline for e in _ACTIVE.get() if e.deadline is not None]


def check_deadline() -> None:
    """Raise :class:`DeadlineExceeded` if any active deadline expired; cheap when none is."""
    entries = _ACTIVE.get()
    if not entries:
        return
    for e in entries:
        if e.deadline is not None and e.deadline.expired:
            what = next((x.what for x in reversed(entries) if x.what), "the call")
            hint = next((x.hint for x in reversed(entries) if x.hint), "use cheaper options")
            e.deadline.check(what, hint)


@contextmanager
def acquire(lock: Any, name: str) -> Iterator[None]:
    """Hold ``lock`` for the block, waiting at most the active deadlines' remaining time.

    The wait is also bounded by each active deadline's ``lock_wait``; without
    an active deadline it waits as long as it takes.

    Raises:
        BackboneBusy: the lock did not come free in time (``name``: the backbone).
        DeadlineExceeded: a deadline had already expired or was cancelled.
    """
    check_deadline()
    active = current_deadlines()
    waits = [d.lock_wait for d in active if d.lock_wait is not None]
    end = time.monotonic() + min(waits) if waits else math.inf
    ok = lock.acquire(blocking=False) or not active and lock.acquire()
    while not ok:
        left = min([end - time.monotonic(), *(d.remaining() for d in active)])
        if left <= 0:
            if any(d.cancelled for d in active):
                check_deadline()  # cancelled while waiting: say so rather than "busy"
            raise BackboneBusy(f"backbone {name} is busy with another request; try again in a moment")
        ok = lock.acquire(timeout=min(left, _POLL_S))  # short waits: a cancellation is seen
    try:
        yield
    finally:
        lock.release()
