"""Exception types shared by the whole package.

Every error a user can trigger derives from :class:`ExplainzooError`, so the CLI
and the demo can turn them into readable messages without hiding real bugs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ExplainzooError(ValueError):
    """A problem the caller can fix; the message says what went wrong and how."""


class UnknownNameError(ExplainzooError, KeyError):
    """A backbone, explainer, layer or class name that does not exist."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(ExplainzooError):
    """Pretrained weights were asked for but none could be found or loaded."""


class PluginLoadError(ExplainzooError):
    """A registered plugin failed to import or is of the wrong type."""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` close matches of ``name`` among ``candidates``."""
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not close:
        lowered = name.lower()
        close = [c for c in candidates if lowered in c.lower()][:n]
    return close


def unknown(kind: str, name: str, candidates: Iterable[str], extra: str = "") -> UnknownNameError:
    """Build an :class:`UnknownNameError` with 'did you mean' suggestions."""
    candidates = list(candidates)
    close = suggest(name, candidates)
    msg = f"unknown {kind} {name!r}"
    if close:
        msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    if extra:
        msg += f" {extra}"
    return UnknownNameError(msg)
