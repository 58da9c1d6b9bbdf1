"""The zoo: what to look at.

>>> from explainzoo.backbones import create_backbone, list_backbones
>>> bb = create_backbone("timm:resnet18")          # random init, no network
>>> bb.layers["last"]
'layer4'

Backbones register through the ``explainzoo.backbones`` entry-point group (a
plain name such as ``vgg11_ref`` -> a factory ``(pretrained, checkpoint,
**kwargs) -> Backbone``) and ``explainzoo.backbone_families`` (a prefix such as
``timm`` -> a :class:`BackboneFamily`). Every built-in builds through
:func:`build_backbone`, which resolves weights in one order (checkpoint,
offline package, the family's hub, random init). Where things are:

- ``backbone.py``: :class:`Backbone`; ``outputs.py``: which output is scored;
- ``builder.py``: :func:`build_backbone`; ``weights.py``: reading weights;
- ``family.py``: :class:`BackboneFamily`; ``timm_zoo.py``, ``vgg11_ref.py``: the zoo;
- ``zoo.py``: the registries, :func:`create_backbone`, :func:`load_backbone`;
- ``layers.py``: the probe, :class:`LayerHints`, derived aliases (model-agnostic);
- ``preprocess.py``, ``labels.py``, ``images.py``, ``guard.py``, ``registry.py``, ``errors.py``.
"""

from __future__ import annotations

from .backbone import Backbone
from .builder import Hub, build_backbone
from .errors import (
    ExplainzooError,
    PluginLoadError,
    UnknownNameError,
    WeightsUnavailableError,
)
from .family import BackboneFamily
from .guard import hook_counts, model_lock, preserved_state, remove_hook
from .layers import LayerHints
from .outputs import scored_output
from .preprocess import Preprocessing
from .registry import PLUGIN_API_VERSION, PluginFailure, PluginInfo
from .zoo import (
    CURATED,
    backbone_failures,
    backbone_registry,
    create_backbone,
    family_registry,
    list_backbones,
    load_backbone,
    random_init_warning,
)

__all__ = [
    "CURATED",
    "PLUGIN_API_VERSION",
    "Backbone",
    "BackboneFamily",
    "ExplainzooError",
    "Hub",
    "LayerHints",
    "PluginFailure",
    "PluginInfo",
    "PluginLoadError",
    "Preprocessing",
    "UnknownNameError",
    "WeightsUnavailableError",
    "backbone_failures",
    "backbone_registry",
    "build_backbone",
    "create_backbone",
    "family_registry",
    "hook_counts",
    "list_backbones",
    "load_backbone",
    "model_lock",
    "preserved_state",
    "random_init_warning",
    "remove_hook",
    "scored_output",
]
