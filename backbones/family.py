"""The :class:`BackboneFamily` protocol: one zoo answering ``family:<model>`` names.

A family lists its model names and builds a :class:`~.backbone.Backbone` for
one of them, normally through :func:`~.builder.build_backbone` so weights are
resolved the same way for every family. It registers under the entry-point
group ``explainzoo.backbone_families`` (the class or an instance); a plain
callable factory ``(model_name, pretrained, checkpoint, **kwargs) -> Backbone``
is still accepted from older plugins and wrapped in :class:`FactoryFamily`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .backbone import Backbone
from .layers import LayerHints


class BackboneFamily(ABC):
    """A zoo of models built by name: ``timm`` answers ``timm:<model>``.

    Subclasses set :attr:`name` and implement :meth:`create`; they override
    :meth:`list_names` to make their models listable and :meth:`hints_for`
    to give layer hints for a bare model of theirs.
    """

    #: the prefix before the colon in backbone names.
    name: str = ""

    def list_names(self, pattern: str = "*") -> list[str]:
        """Model names (without the prefix) matching a shell wildcard."""
        return []

    @abstractmethod
    def create(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint: str | Path | None = None,
        **kwargs: Any,
    ) -> Backbone:
        """Build ``<name>:<model_name>``.

        Args:
            model_name: a name the family knows.
            pretrained: load published weights (an error when unreachable).
            checkpoint: a state-dict file; wins over ``pretrained``.
            **kwargs: family options (``num_classes``, ...).

        Raises:
            UnknownNameError: no such model; the message suggests close names.
            WeightsUnavailableError: pretrained weights asked for but not reachable.
        """

    def hints_for(self, model: nn.Module) -> LayerHints | None:
        """Layer hints for a model of this family, None for any other model."""
        return None

    def __call__(self, model_name: str, pretrained: bool = False,
                 checkpoint: str | Path | None = None, **kwargs: Any) -> Backbone:
        """Same as :meth:`create`, so a family also works as a plain factory."""
        return self.create(model_name, pretrained=pretrained, checkpoint=checkpoint, **kwargs)


class FactoryFamily(BackboneFamily):
    """A plugin's plain factory function seen as a family (compatibility).

    Its names are listed when the function carries a ``list_names`` attribute
    (the convention before :class:`BackboneFamily`), else none are.
    """

    def __init__(self, factory: Callable[..., Backbone]) -> None:
        self.factory = factory
        self.name = getattr(factory, "__name__", type(factory).__name__)

    def list_names(self, pattern: str = "*") -> list[str]:
        lister = getattr(self.factory, "list_names", None)
        return list(lister(pattern)) if callable(lister) else []

    def create(self, model_name: str, pretrained: bool = False,
               checkpoint: str | Path | None = None, **kwargs: Any) -> Backbone:
        return self.factory(model_name, pretrained=pretrained, checkpoint=checkpoint, **kwargs)


def as_family(obj: Any) -> BackboneFamily:
    """Validate an object loaded from ``explainzoo.backbone_families``.

    A :class:`BackboneFamily` subclass is instantiated, an instance (or any
    object with callable ``create`` and ``list_names``) is used as is, a plain
    callable is wrapped in :class:`FactoryFamily`.

    Raises:
        TypeError: anything else (the registry records it as a broken plugin).
    """
    if isinstance(obj, type) and issubclass(obj, BackboneFamily):
        return obj()
    if isinstance(obj, BackboneFamily):
        return obj
    if callable(getattr(obj, "create", None)) and callable(getattr(obj, "list_names", None)):
        return obj  # a duck-typed family
    if callable(obj) and not isinstance(obj, type):
        return FactoryFamily(obj)
    raise TypeError(
        f"a backbone family entry point must be a BackboneFamily (class or instance) "
        f"or a factory function, got {type(obj).__name__}"
    )


def builtin_hints(model: nn.Module) -> LayerHints:
    """Hints for a bare model from explainzoo's own families; empty hints otherwise.

    Only built-in families are asked: a bare module never imports plugin code.
    """
    from .errors import PluginLoadError
    from .zoo import family_registry

    for name, info in family_registry.infos().items():
        if not info.builtin:
            continue
        try:
            family = family_registry.load(name, kind="backbone family")
        except PluginLoadError:
            continue
        hints = family.hints_for(model) if hasattr(family, "hints_for") else None
        if hints is not None:
            return hints
    return LayerHints()
