"""Entry-point registries: plugins are listed without importing them.

Both ``explainzoo.explainers`` and ``explainzoo.backbones`` are entry-point
groups. Names come from installed distributions' metadata only; an entry is
imported the first time it is asked for and cached. A plugin that fails to
import (any exception, ``SystemExit`` included) or loads an object of the wrong
type is recorded with its name, distribution and traceback and never breaks the
others. Names registered by explainzoo itself win clashes.

Plugin API version. :data:`PLUGIN_API_VERSION` is the version of the extension
API (the ``Explainer`` templates, ``BackboneFamily``, ``build_backbone``); it
changes only when an existing plugin would break. A plugin declares the
version it was written for in one of two ways, both optional:

* ``explainzoo_api = "1"`` as an attribute of the registered object (a class
  attribute of the explainer or family) or of its module, checked when it is
  loaded;
* ``Requires-Dist: explainzoo (>=0.1,<0.2)`` in its distribution's metadata
  (``dependencies = ["explainzoo>=0.1,<0.2"]`` in its ``pyproject.toml``),
  checked against the installed explainzoo before anything is imported.

An incompatible plugin is recorded as broken with the reason instead of being
used. A plugin that declares nothing is assumed compatible.

Hosts get two more controls: :meth:`Registry.restrict` (an allowlist: only
the named third-party plugins are imported, built-ins always are, refused
names are reported by :meth:`Registry.refused`) and safe mode
(:meth:`Registry.set_safe`, or ``load(name, safe=True)``): a third-party
plugin is first imported in a child process, so one that calls ``os._exit``
or crashes the interpreter at import is recorded as broken with the child's
exit code instead of ending the listing or the app.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from .errors import PluginLoadError, unknown

T = TypeVar("T")

BUILTIN_DIST = "explainzoo"
#: The version of the extension API plugins are written against.
PLUGIN_API_VERSION = "1"
#: Seconds a child process may take to import one plugin in safe mode.
PROBE_TIMEOUT_S = 120.0

_PROBE = (
    "import sys\n"
    "from importlib import metadata\n"
    "group, name, value = sys.argv[1:4]\n"
    "ep = metadata.EntryPoint(name, value, group)\n"
    "ep.load()\n"
)


@dataclass(frozen=True)
class PluginInfo:
    """What the metadata says about one registered name (nothing imported).

    Attributes:
        name: the entry-point name.
        value: ``module:attribute``.
        dist: the distribution that registers it.
        dist_version: that distribution's version ("" when unknown).
    """

    name: str
    value: str
    dist: str
    dist_version: str = ""

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


def _api_major(version: object) -> str:
    return str(version).strip().split(".")[0]


def api_mismatch(declared: object) -> str | None:
    """Why a declared ``explainzoo_api`` is incompatible, or None when it is compatible."""
    if declared is None or _api_major(declared) == _api_major(PLUGIN_API_VERSION):
        return None
    return (
        f"written for explainzoo plugin API {declared}, this explainzoo provides API "
        f"{PLUGIN_API_VERSION}: install a version of the plugin made for API {PLUGIN_API_VERSION}"
    )


def requirement_mismatch(dist: metadata.Distribution | None) -> str | None:
    """Why a distribution's ``Requires-Dist: explainzoo ...`` excludes the installed explainzoo."""
    if dist is None:
        return None
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip and setuptools
        return None
    for line in dist.requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.lower().replace("_", "-") != BUILTIN_DIST or req.marker is not None and "extra" in str(
            req.marker
        ):
            continue
        try:
            installed = metadata.version(BUILTIN_DIST)
        except metadata.PackageNotFoundError:
            return None
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            return (
                f"requires explainzoo{req.specifier}, but explainzoo {installed} is installed: "
                "install a plugin version made for it"
            )
    return None


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
        self._dists: dict[str, metadata.Distribution | None] = {}
        self._shadowed: list[PluginInfo] = []
        self._loaded: dict[str, T] = {}
        self._failures: dict[str, PluginFailure] = {}
        self._probed: set[str] = set()
        self._allowed: frozenset[str] | None = None
        self.safe = False

    def _scan(self) -> dict[str, PluginInfo]:
        with self._lock:
            if self._infos is None:
                infos: dict[str, PluginInfo] = {}
                shadowed: list[PluginInfo] = []
                for ep in metadata.entry_points(group=self.group):
                    dist = ep.dist.name if ep.dist is not None else "?"
                    version = ep.dist.version if ep.dist is not None else ""
                    info = PluginInfo(ep.name, ep.value, dist, version or "")
                    old = infos.get(ep.name)
                    if old is None or (info.builtin and not old.builtin):
                        if old is not None:
                            shadowed.append(old)
                        infos[ep.name] = info
                        self._dists[ep.name] = ep.dist
                    elif old != info:  # else: the same distribution seen twice on sys.path
                        shadowed.append(info)
                self._infos = infos
                self._shadowed = shadowed
            return self._infos

    def refresh(self) -> None:
        """Forget what was scanned, probed and loaded (after installing a plugin)."""
        with self._lock:
            self._infos = None
            self._dists.clear()
            self._loaded.clear()
            self._failures.clear()
            self._probed.clear()

    # -- host controls -------------------------------------------------------
    def restrict(self, allowed: Iterable[str] | None) -> None:
        """Allow only these third-party plugins (entry names or distribution names).

        Built-ins are always allowed; ``None`` lifts the restriction. Refused
        entries are not listed by :meth:`names`, not imported, and reported by
        :meth:`refused`.
        """
        with self._lock:
            self._allowed = None if allowed is None else frozenset(allowed)

    def allowed(self, info: PluginInfo) -> bool:
        """Whether the allowlist lets ``info`` be imported."""
        a = self._allowed
        return a is None or info.builtin or info.name in a or info.dist in a

    def refused(self) -> list[PluginInfo]:
        """Third-party entries the allowlist refuses, by name."""
        return [i for _, i in sorted(self._scan().items()) if not self.allowed(i)]

    def set_safe(self, safe: bool = True) -> None:
        """Import each third-party plugin in a child process first (see the module docstring)."""
        self.safe = bool(safe)

    # -- listing -------------------------------------------------------------
    def infos(self) -> dict[str, PluginInfo]:
        """All registered names with their metadata, sorted, nothing imported (refused ones too)."""
        return dict(sorted(self._scan().items()))

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered (and allowed) names, optionally filtered by a shell-style wildcard."""
        names = sorted(n for n, i in self._scan().items() if self.allowed(i))
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

    # -- loading -------------------------------------------------------------
    def load_all(self, safe: bool | None = None) -> dict[str, T]:
        """Load every allowed entry; failures are recorded, never raised."""
        out: dict[str, T] = {}
        for name in self.names():
            try:
                out[name] = self.load(name, safe=safe)
            except PluginLoadError:
                pass
        return out

    def probe(self, name: str, timeout: float = PROBE_TIMEOUT_S) -> PluginFailure | None:
        """Import ``name`` in a child process; record and return a failure when the child dies.

        Built-ins are not probed. A child that exits with a non-zero code (an
        exception, ``os._exit``, a crash) or runs past ``timeout`` seconds
        marks the plugin broken; its stderr's tail becomes the traceback.
        """
        info = self._scan().get(name)
        if info is None or info.builtin:
            return None
        with self._lock:
            if name in self._failures or name in self._probed:
                return self._failures.get(name)
        cmd = [sys.executable, "-c", _PROBE, self.group, info.name, info.value]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            code, err = done.returncode, done.stderr
        except subprocess.TimeoutExpired as exc:
            raw = exc.stderr or ""
            code, err = None, raw if isinstance(raw, str) else raw.decode(errors="replace")
        with self._lock:
            self._probed.add(name)
            if code == 0:
                return None
            why = f"importing it exits with code {code}"
            if code is None:
                why = f"importing it ran past {timeout:g} s"
            failure = PluginFailure(info.name, info.value, info.dist,
                                    f"{why} (checked in a child process)", err[-4000:])
            self._failures[name] = failure
            return failure

    def load(self, name: str, kind: str = "name", safe: bool | None = None) -> T:
        """Import (once) and return the object registered under ``name``.

        Args:
            name: the entry-point name.
            kind: what it is, for the unknown-name message.
            safe: probe a third-party plugin in a child process first;
                None: the registry's :meth:`set_safe` setting.

        Raises:
            UnknownNameError: nothing is registered under ``name``.
            PluginLoadError: the plugin is broken, incompatible or refused by
                the allowlist; the message names it and its distribution.
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
            if not self.allowed(info):
                raise PluginLoadError(
                    f"plugin {name!r} from distribution {info.dist!r} is not allowed on this host; "
                    f"add it to the allowlist (e.g. --plugins {name}) to use it"
                )
        if (self.safe if safe is None else safe) and self.probe(name) is not None:
            raise _as_error(self._failures[name])
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            return self._import(name, info)

    def _import(self, name: str, info: PluginInfo) -> T:
        """Check the metadata, import, check the declared API version, validate; record failures."""
        try:
            mismatch = requirement_mismatch(self._dists.get(name))
            if mismatch is not None:
                raise PluginLoadError(mismatch)
            ep = metadata.EntryPoint(info.name, info.value, self.group)
            raw = ep.load()
            declared = getattr(raw, "explainzoo_api", None)
            if declared is None:
                declared = getattr(sys.modules.get(info.value.split(":")[0].strip()), "explainzoo_api", None)
            mismatch = api_mismatch(declared)
            if mismatch is not None:
                raise PluginLoadError(mismatch)
            obj = self._validate(raw)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin included
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = "" if isinstance(exc, PluginLoadError) else traceback.format_exc()
            failure = PluginFailure(info.name, info.value, info.dist, f"{type(exc).__name__}: {exc}", tb)
            self._failures[name] = failure
            raise _as_error(failure) from None
        self._loaded[name] = obj
        return obj


def _as_error(f: PluginFailure) -> PluginLoadError:
    msg = f"plugin {f.name!r} ({f.value}) from distribution {f.dist!r} failed to load: {f.error}"
    return PluginLoadError(f"{msg}\n{f.traceback}" if f.traceback else msg)
