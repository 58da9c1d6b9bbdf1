"""What to show: explainers, the result type and rendering.

>>> from explainzoo.backbones import create_backbone
>>> from explainzoo.explainers import explain
>>> bb = create_backbone("timm:resnet18")
>>> exp = explain("gradcam", bb, bb.preprocess(image))
>>> exp.maps.shape            # (1, 224, 224), float32 in [0, 1]

Explainers register through the ``explainzoo.explainers`` entry-point group;
listing them imports nothing, loading is lazy and cached, and a broken plugin
is recorded (see :func:`explainer_failures`) without affecting the others.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from explainzoo.backbones import Backbone
from explainzoo.backbones.registry import PluginFailure, Registry

from . import targets
from .base import (
    AttributionExplainer,
    CAMExplainer,
    Context,
    Explainer,
    GridExplainer,
    Option,
    tile,
)
from .budget import Cost
from .deadline import BackboneBusy, Deadline, DeadlineExceeded
from .mechanics import upsample
from .result import Explanation
from .validate import ExplainerContractError

__all__ = [
    "AttributionExplainer",
    "BackboneBusy",
    "CAMExplainer",
    "Context",
    "Cost",
    "Deadline",
    "DeadlineExceeded",
    "Explainer",
    "ExplainerContractError",
    "Explanation",
    "GridExplainer",
    "Option",
    "create_explainer",
    "explain",
    "explainer_class",
    "explainer_failures",
    "explainer_registry",
    "list_explainers",
    "targets",
    "tile",
    "upsample",
]


def _validate(obj: Any) -> type[Explainer]:
    if not (isinstance(obj, type) and issubclass(obj, Explainer)):
        raise TypeError(f"an explainer entry point must be an Explainer subclass, got {obj!r}")
    if getattr(obj, "__abstractmethods__", None):
        raise TypeError(f"{obj.__name__} is abstract: implement {sorted(obj.__abstractmethods__)}")
    return obj


explainer_registry: Registry[type[Explainer]] = Registry("explainzoo.explainers", _validate)


def list_explainers(pattern: str | None = None) -> list[str]:
    """Registered explainer names (wildcards allowed); imports no plugin code."""
    return explainer_registry.names(pattern)


def explainer_class(name: str) -> type[Explainer]:
    """The class registered under ``name`` (imported on first use)."""
    return explainer_registry.load(name, kind="explainer")


def create_explainer(name: str, **options: Any) -> Explainer:
    """An explainer instance with validated options (``steps=32``, ...)."""
    cls = explainer_class(name)
    inst = cls.__new__(cls)
    inst.name = name
    inst.__init__(**options)
    return inst


def explain(
    method: str,
    backbone: Backbone | nn.Module,
    x: Tensor | None = None,
    target: Any = None,
    layer: str | None = None,
    *,
    deadline: Deadline | float | None = None,
    cancel: Any = None,
    **options: Any,
) -> Explanation:
    """One call: ``explain("gradcam", bb, x, target=None, layer="last")``.

    ``deadline`` (seconds or a :class:`Deadline`) and ``cancel`` (a token) are
    as in :meth:`Explainer.explain`; the other keywords are the method's options.
    """
    return create_explainer(method, **options).explain(
        backbone, x, target=target, layer=layer, deadline=deadline, cancel=cancel
    )


def explainer_failures() -> dict[str, PluginFailure]:
    """Explainer plugins that failed to load so far, by name."""
    return explainer_registry.failures()
