"""The host's plugin allowlist: which third-party explainers and backbones a public demo imports.

``explainzoo demo --plugins NAME[,NAME]`` (and ``EXPLAINZOO_PLUGINS`` in the
Spaces bundle) names the third-party entries a host trusts: entry-point
names (``centre_cam``) or distribution names (``explainzoo-example-plugin``,
which allows all of its entries). Built-ins are always allowed. Everything
else installed is refused: never imported, never listed, and reported once at
start-up. The registries enforce it (:meth:`~explainzoo.backbones.registry.Registry.restrict`);
this module parses the host's list and says what it refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from explainzoo.backbones import PluginInfo, backbone_registry, family_registry
from explainzoo.explainers import explainer_registry

__all__ = ["BUILTINS_ONLY", "REGISTRIES", "parse_plugins", "refused_notice", "restrict_plugins"]

#: What ``--plugins`` takes for "built-ins only" (the Spaces bundle's default).
BUILTINS_ONLY = ("", "none", "builtin", "builtins")
#: The registries a plugin can extend, by what they hold.
REGISTRIES = {
    "explainer": explainer_registry,
    "backbone": backbone_registry,
    "backbone family": family_registry,
}


def parse_plugins(value: str | Sequence[str] | None) -> list[str] | None:
    """The allowlist: None (no restriction: every installed plugin), or names (maybe none).

    ``""``, ``"none"`` or ``"builtins"`` mean built-ins only; otherwise a
    comma-separated list (or a sequence) of entry or distribution names.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in BUILTINS_ONLY:
            return []
        value = value.split(",")
    return list(dict.fromkeys(v.strip() for v in value if v and v.strip()))


def restrict_plugins(allowed: str | Sequence[str] | None) -> dict[str, list[PluginInfo]]:
    """Apply the allowlist to every registry; return the refused entries by what they are.

    Nothing is imported: the registries' metadata says which entries are third-party.
    """
    names = parse_plugins(allowed)
    refused: dict[str, list[PluginInfo]] = {}
    for what, registry in REGISTRIES.items():
        registry.restrict(None if names is None else set(names))
        refused[what] = registry.refused()
    return refused


def _unmatched(names: Sequence[str]) -> list[str]:
    """Allowed names that match no installed third-party entry (typos, plugins not installed)."""
    known: set[str] = set()
    for registry in REGISTRIES.values():
        for info in registry.infos().values():
            if not info.builtin:
                known |= {info.name, info.dist}
    return [n for n in names if n not in known]


def refused_notice(allowed: str | Sequence[str] | None, refused: dict[str, list[PluginInfo]]) -> list[str]:
    """The start-up lines a host reads: each refused entry, and allowed names that match nothing."""
    lines = [
        f"plugin allowlist: refused {what} {info.name!r} from {info.dist} {info.dist_version}".rstrip()
        + " (not in --plugins / EXPLAINZOO_PLUGINS)"
        for what, infos in refused.items()
        for info in infos
    ]
    names = parse_plugins(allowed) or []
    lines += [f"plugin allowlist: {n!r} matches no installed plugin" for n in _unmatched(names)]
    return lines
