"""Entry-point registries: plugins are listed without importing them.

Both ``explainzoo.explainers`` and ``explainzoo.backbones`` are entry-point
groups. Names come from installed distributions' metadata only; an entry is
imported the first time it is asked for and cached. A plugin that fails to
import (any exception, ``SystemExit`` included) or loads an object of the wrong
type is recorded with its name, distribution and traceback and never breaks the
others. Names registered by explainzoo itself win clashes.
"""

from __future__ import annotations

import fnmatch
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from .errors import PluginLoadError, unknown

T = TypeVar("T")

BUILTIN_DIST = "explainzoo"


@dataclass(frozen=True)
class PluginInfo:
    """What the metadata says about one registered name (nothing imported)."""

    name: str
    value: str
    dist: str

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, with the reason and traceback."""

    name: str
    value: str
    dist: str
    error: str
    traceback: str


class Registry(Generic[T]):
    """A lazily loading registry over one entry-point group.

    Args:
        group: the entry-point group name.
        validate: called on each loaded object; raises ``TypeError`` when the
            object is not acceptable for this group.
    """

    def __init__(self, group: str, validate: Callable[[Any], T]) -> None:
        self.group = group
        self._validate = validate
        self._lock = threading.RLock()
        self._infos: dict[str, PluginInfo] | None = None
        self._shadowed: list[PluginInfo] = []
        self._loaded: dict[str, T] = {}
        self._failures: dict[str, PluginFailure] = {}

    def _scan(self) -> dict[str, PluginInfo]:
        with self._lock:
            if self._infos is None:
                infos: dict[str, PluginInfo] = {}
                shadowed: list[PluginInfo] = []
                for ep in metadata.entry_points(group=self.group):
                    dist = ep.dist.name if ep.dist is not None else "?"
                    info = PluginInfo(ep.name, ep.value, dist)
                    old = infos.get(ep.name)
                    if old is None:
                        infos[ep.name] = info
                    elif info.builtin and not old.builtin:
                        shadowed.append(old)
                        infos[ep.name] = info
                    elif old == info:
                        continue  # the same distribution seen twice on sys.path
                    else:
                        shadowed.append(info)
                self._infos = infos
                self._shadowed = shadowed
            return self._infos

    def refresh(self) -> None:
        """Forget what was scanned and loaded (after installing a plugin)."""
        with self._lock:
            self._infos = None
            self._loaded.clear()
            self._failures.clear()

    def infos(self) -> dict[str, PluginInfo]:
        """All registered names with their metadata, sorted, nothing imported."""
        return dict(sorted(self._scan().items()))

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, optionally filtered by a shell-style wildcard."""
        names = sorted(self._scan())
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def shadowed(self) -> list[PluginInfo]:
        """Entries hidden by a name clash (explainzoo's own names win)."""
        self._scan()
        return list(self._shadowed)

    def failures(self) -> dict[str, PluginFailure]:
        """Plugins that failed so far (call :meth:`load_all` to try them all)."""
        with self._lock:
            return dict(self._failures)

    def load_all(self) -> dict[str, T]:
        """Load every entry; failures are recorded, never raised."""
        out: dict[str, T] = {}
        for name in self.names():
            try:
                out[name] = self.load(name)
            except PluginLoadError:
                pass
        return out

    def load(self, name: str, kind: str = "name") -> T:
        """Import (once) and return the object registered under ``name``.

        Raises:
            UnknownNameError: nothing is registered under ``name``.
            PluginLoadError: the plugin is broken; the message names it and
                its distribution and carries the traceback.
        """
        infos = self._scan()
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            if name in self._failures:
                raise _as_error(self._failures[name])
            info = infos.get(name)
            if info is None:
                raise unknown(kind, name, infos, f"(registered: {', '.join(sorted(infos))})")
            try:
                ep = metadata.EntryPoint(info.name, info.value, self.group)
                obj = self._validate(ep.load())
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin included
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failure = PluginFailure(
                    info.name,
                    info.value,
                    info.dist,
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                )
                self._failures[name] = failure
                raise _as_error(failure) from None
            self._loaded[name] = obj
            return obj


def _as_error(f: PluginFailure) -> PluginLoadError:
    return PluginLoadError(
        f"plugin {f.name!r} ({f.value}) from distribution {f.dist!r} failed to load: "
        f"{f.error}\n{f.traceback}"
    )
