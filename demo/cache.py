"""The demo's backbones: loaded once, with their UI choices and cost profile, in a bounded
thread-safe LRU cache.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from explainzoo.backbones import (
    Backbone,
    ExplainzooError,
    load_backbone,
    preserved_state,
    random_init_warning,
    remove_hook,
)

__all__ = ["BackboneCache", "BackboneProfile", "LoadedBackbone", "grid_pixels", "load_entry", "measure"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedBackbone:
    """A cached backbone with what the UI needs from it, computed once at load.

    Attributes:
        backbone: the :class:`Backbone`.
        warning: a visible warning when it runs on random init.
        layers: (label, value) choices: aliases first, then every map layer.
        conv_layers: (label, value) choices of layers with 4-D conv weights
            whose filter grid stays under the pixel cap.
        too_big: conv layers left out of ``conv_layers`` -> their grid size.
        profile: what one image costs on it (:func:`measure`, at load), for the
            request budget.
    """

    backbone: Backbone
    warning: str | None
    layers: list[tuple[str, str]]
    conv_layers: list[tuple[str, str]]
    too_big: dict[str, int]
    _profile: BackboneProfile | None = field(default=None, repr=False)

    @property
    def profile(self) -> BackboneProfile:
        if self._profile is None:  # two racing requests measure twice: harmless
            self._profile = measure(self.backbone)
        return self._profile

    @property
    def layer_values(self) -> set[str]:
        return {v for _, v in self.layers}

    @property
    def conv_values(self) -> set[str]:
        return {v for _, v in self.conv_layers}


class BackboneCache:
    """A bounded, thread-safe LRU cache of loaded backbones.

    Concurrent requests for the same cold backbone build it once (a lock per
    name); requests for other backbones are not blocked meanwhile. A backbone
    evicted while a request still uses it stays alive for that request.
    """

    def __init__(self, loader: Callable[[str], LoadedBackbone], maxsize: int) -> None:
        if maxsize < 1:
            raise ExplainzooError(f"backbone cache size must be >= 1, got {maxsize}")
        self._loader = loader
        self.maxsize = maxsize
        self._items: OrderedDict[str, LoadedBackbone] = OrderedDict()
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self.loads = 0

    def _hit(self, name: str) -> LoadedBackbone | None:
        with self._lock:
            item = self._items.get(name)
            if item is not None:
                self._items.move_to_end(name)
            return item

    def get(self, name: str) -> LoadedBackbone:
        """The loaded backbone ``name``, building it on first use."""
        item = self._hit(name)
        if item is not None:
            return item
        with self._lock:
            name_lock = self._name_locks.setdefault(name, threading.Lock())
        with name_lock:
            item = self._hit(name)
            if item is not None:
                return item
            item = self._loader(name)
            with self._lock:
                self.loads += 1
                self._items[name] = item
                self._items.move_to_end(name)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            return item

    def cached(self) -> list[str]:
        """Names currently cached, least recently used first."""
        with self._lock:
            return list(self._items)


def grid_pixels(weight_shape: Sequence[int]) -> int:
    """Pixels of the filter grid ``Filters`` draws for a conv weight (O,I,kh,kw)."""
    o, i, kh, kw = (int(s) for s in weight_shape)
    count = o if i == 3 else o * i
    n = int(np.ceil(np.sqrt(count)))
    return n * n * (kh + 2) * (kw + 2)


def load_entry(name: str, pretrained: bool, max_grid_pixels: int) -> LoadedBackbone:
    """Load ``name`` (pretrained, else a seeded random init with a warning) and its UI choices."""
    bb, warning = load_backbone(name, random_init=not pretrained, seed=0)  # seed: the same random init every start
    if warning is None and not bb.pretrained:
        warning = random_init_warning(name)
    if warning:
        logger.warning("%s", warning)
    layers = [(f"{alias} ({path})", alias) for alias, path in bb.layers.items()]
    layers += [(path, path) for path in bb.map_layers()]
    conv: list[tuple[str, str]] = []
    too_big: dict[str, int] = {}
    if "conv1" in bb.layers:
        conv.append((f"conv1 ({bb.layers['conv1']})", "conv1"))
    for path, module in bb.model.named_modules():
        weight = getattr(module, "weight", None)
        if path and isinstance(weight, Tensor) and weight.ndim == 4:
            px = grid_pixels(weight.shape)
            if px > max_grid_pixels:
                too_big[path] = px
            else:
                o, i, kh, kw = weight.shape
                conv.append((f"{path} ({o}x{i}x{kh}x{kw})", path))
    return LoadedBackbone(bb, warning, layers, conv, too_big, measure(bb))  # one forward pass, at load


# --------------------------------------------------------------------------- cost profile


@dataclass(frozen=True)
class BackboneProfile:
    """What one image costs on a backbone: measured once, by one forward pass at load.

    Attributes:
        flops: floating-point operations of one forward pass of one image at
            the input size, counted per layer (convolutions and linear layers:
            2 x multiply-adds; attention's own matmuls, ~8 % of a ViT-S/16,
            and element-wise layers are left out). Deterministic, unlike a
            timed pass on a shared host.
        activation_bytes: bytes of every distinct module output of one image:
            what autograd keeps for a backward pass (a gradient chunk holds
            about ``batch`` x this).
        largest_bytes: the largest single module output of one image: a
            forward-only chunk (``inference_mode``) holds a few of these per
            image at a time.
        parameters: the model's parameter count (for the record).
    """

    flops: float
    activation_bytes: int
    largest_bytes: int
    parameters: int


def _tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _flops(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> float:
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        k = int(np.prod(module.kernel_size))
        return 2.0 * out.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return 2.0 * out.numel() * module.in_features
    return 0.0


def measure(bb: Backbone) -> BackboneProfile:
    """One forward pass of a zero image (under the backbone's lock) counting FLOPs and output bytes."""
    flops = [0.0]
    outputs: dict[int, Tensor] = {}  # kept alive for the pass, so no storage is counted twice

    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        for t in _tensors(out):
            outputs.setdefault(t.untyped_storage().data_ptr(), t)
            flops[0] += _flops(module, args, t)

    leaves = [m for m in bb.model.modules() if not any(True for _ in m.children())]
    with bb.lock, preserved_state(bb.model), torch.inference_mode():
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            bb.model(torch.zeros(1, 3, *bb.input_size))
        finally:
            for h in handles:
                remove_hook(h)
    sizes = [t.untyped_storage().nbytes() for t in outputs.values()]
    params = sum(p.numel() for p in bb.model.parameters())
    return BackboneProfile(flops[0], int(sum(sizes)), int(max(sizes, default=0)), int(params))
