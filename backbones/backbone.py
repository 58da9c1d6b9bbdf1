"""The :class:`Backbone`: a classifier plus everything needed to explain it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import Tensor, nn

from .errors import ExplainzooError, UnknownNameError, suggest, unknown
from .guard import model_lock
from .layers import LayerFormat, Probe, derive_last, probe_model
from .preprocess import Preprocessing


@dataclass(eq=False)
class Backbone:
    """A classifier with its preprocessing, labels, layer aliases and provenance.

    Attributes:
        name: registry name, e.g. ``"vgg11_ref"`` or ``"timm:resnet50"``.
        model: the ``nn.Module`` classifier, (N,3,H,W) -> (N,num_classes) logits.
        preprocessing: input size, mean/std, interpolation and crop.
        labels: class names, index-aligned with the logits.
        weights: where the weights came from ("random init", "checkpoint FILE",
            "imagenet (offline package …)", "timm hub …").
        pretrained: False when the model runs on random init.
        aliases: fixed alias -> module path; when None, derived from a probe
            forward pass (``conv1``, ``last``, ``stage1..N``).
        stage_paths: candidate stage modules for derived aliases (timm's
            ``feature_info``); only those that produce maps are kept.
        first_conv: candidate path for the ``conv1`` alias.
    """

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    labels: list[str]
    weights: str = "random init"
    pretrained: bool = False
    aliases: dict[str, str] | None = None
    stage_paths: Sequence[str] = ()
    first_conv: str | None = None
    _probe_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- preprocessing -----------------------------------------------------
    def preprocess(self, image: Any) -> Tensor:
        """PIL image, array or (3,H,W) tensor -> (1,3,H,W) float32 model input."""
        return self.preprocessing(image)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def lock(self) -> threading.RLock:
        """Serialises explanations that share this model across threads."""
        return model_lock(self.model)

    # -- layers ------------------------------------------------------------
    @cached_property
    def probe(self) -> Probe:
        """One forward pass's record of every module's output layout."""
        with self._probe_lock, self.lock:
            return probe_model(self.model, self.input_size)

    @cached_property
    def layers(self) -> dict[str, str]:
        """Alias -> module path: ``conv1``, ``last``, ``stage1..N``."""
        modules = dict(self.model.named_modules())
        if self.aliases is not None:
            return dict(self.aliases)
        out: dict[str, str] = {}
        first = self.first_conv if self.first_conv in modules else None
        if first is None or not isinstance(modules[first], nn.Conv2d):
            first = next((p for p in self.probe.order if isinstance(modules[p], nn.Conv2d)), None)
        if first is not None:
            out["conv1"] = first
        stages = [p for p in self.stage_paths if p in self.probe.formats]
        last = derive_last(self.model, self.probe, stages)
        if last is not None:
            out["last"] = last
        for i, p in enumerate(stages, 1):
            out[f"stage{i}"] = p
        return out

    def map_layers(self) -> list[str]:
        """Every module path whose output is a map, in forward order."""
        seen: dict[str, None] = {}
        for p in self.probe.order:
            if p in self.probe.formats:
                seen.setdefault(p, None)
        return list(seen)

    def resolve_layer(self, layer: str | None) -> str:
        """Alias or module path -> module path; ``None`` means ``"last"``.

        Raises:
            UnknownNameError: naming the aliases and the closest module paths.
        """
        layer = "last" if layer is None else layer
        if not isinstance(layer, str) or not layer:
            raise ExplainzooError(f"layer must be a non-empty string, got {layer!r}")
        if layer in self.layers:
            return self.layers[layer]
        try:
            # a path walk, not named_modules(): this runs on every explain call
            self.model.get_submodule(layer)
            return layer
        except AttributeError:
            pass
        modules = dict(self.model.named_modules())
        close = suggest(layer, list(self.layers) + [p for p in modules if p])
        msg = f"unknown layer {layer!r} for {self.name}"
        if close:
            msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" aliases: {', '.join(self.layers)}; any module path also works"
        raise UnknownNameError(msg)

    def module(self, path: str) -> nn.Module:
        """The submodule at a resolved path."""
        return self.model.get_submodule(path)

    def layer_format(self, path: str) -> LayerFormat:
        """How to read ``path``'s output as a map, or a clear error."""
        fmt = self.probe.formats.get(path)
        if fmt is None:
            raise ExplainzooError(
                f"layer {path!r} of {self.name} does not produce a spatial map "
                f"(4-D feature map or patch tokens); pick one of: "
                f"{', '.join(self.layers)} or a path from `explainzoo layers {self.name}`"
            )
        return fmt

    def reshape(self, path: str, out: Tensor, input_hw: tuple[int, int]) -> Tensor:
        """Module output -> (N,C,h,w) map (tokens and NHWC rearranged)."""
        return self.layer_format(path).to_map(out, input_hw)

    # -- labels ------------------------------------------------------------
    def class_index(self, target: int | str) -> int:
        """A class index from an int or a class name (exact, then prefix)."""
        if isinstance(target, bool):
            raise ExplainzooError(f"target must be a class index or name, got {target!r}")
        if isinstance(target, int):
            if not 0 <= target < self.num_classes:
                raise ExplainzooError(
                    f"class index {target} out of range for {self.name} "
                    f"({self.num_classes} classes: 0..{self.num_classes - 1})"
                )
            return target
        if isinstance(target, str):
            key = target.strip().lower()
            if key.isdigit():
                return self.class_index(int(key))
            index = self._label_index
            if key in index:
                return index[key]
            raise unknown("class", target, self.labels, f"for {self.name}")
        raise ExplainzooError(f"target must be a class index or name, got {target!r}")

    @cached_property
    def _label_index(self) -> dict[str, int]:
        """Lower-cased full label and each comma-separated synonym -> the first index naming it."""
        index: dict[str, int] = {}
        for i, lbl in enumerate(self.labels):
            low = lbl.lower()
            index.setdefault(low, i)
            for syn in low.split(","):
                index.setdefault(syn.strip(), i)
        return index

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, weights={self.weights!r}, input={self.input_size})"


BackboneFactory = Callable[..., Backbone]
