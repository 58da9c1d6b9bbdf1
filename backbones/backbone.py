"""The :class:`Backbone`: a classifier plus everything needed to explain it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import Tensor, nn

from .errors import ExplainzooError, UnknownNameError, suggest, unknown
from .guard import model_lock
from .layers import LayerFormat, LayerHints, Probe, derive_aliases, probe_model
from .outputs import OutputKey, scored_output
from .preprocess import Preprocessing

#: What a backbone's scored output can be (see :attr:`Backbone.kind`).
KINDS = ("classifier", "segmentation", "embedding")


@dataclass(eq=False)
class Backbone:
    """A classifier with its preprocessing, labels, layer aliases and provenance.

    Attributes:
        name: registry name, e.g. ``"vgg11_ref"`` or ``"timm:resnet50"``.
        model: the ``nn.Module`` classifier, (N,3,H,W) -> (N,num_classes) logits
            (or an output that holds them: see ``output_key``).
        preprocessing: input size, mean/std, interpolation and crop.
        labels: class names, index-aligned with the logits.
        weights: where the weights came from ("random init", "checkpoint FILE",
            "imagenet (offline package …)", "timm hub …").
        pretrained: False when the model runs on random init.
        aliases: fixed alias -> module path; when None, derived from a probe
            forward pass (``conv1``, ``last``, ``stage1..N``).
        hints: what the model's family knows about its layers (stem conv,
            stages, prefix tokens, channels-last, preferred ``last``); when
            None, the built-in families are asked (a bare timm model still
            gets timm's hints), else none are used.
        output_key: which part of the model's output is scored when it is not
            a tensor (a dict key, tuple index, attribute name or callable);
            None: the tensor itself, or its ``.logits``. See
            :meth:`scored_output`.
        kind: what the scored output is: ``"classifier"`` (N,num_classes)
            logits, ``"segmentation"`` (N,K,H,W) dense logits, or
            ``"embedding"`` (N,D) features with no labels (a timm model built
            with ``num_classes=0``). None (the default) becomes "embedding"
            when ``labels`` is empty, else "classifier".
    """

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    labels: list[str]
    weights: str = "random init"
    pretrained: bool = False
    aliases: dict[str, str] | None = None
    hints: LayerHints | None = None
    output_key: OutputKey = None
    kind: str | None = None
    _probe_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = "classifier" if self.labels else "embedding"
        if self.kind not in KINDS:
            raise ExplainzooError(f"backbone kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def is_embedding(self) -> bool:
        """True when the model outputs features with no class labels (no class targets)."""
        return self.kind == "embedding"

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

    # -- outputs -----------------------------------------------------------
    def scored_output(self, out: Any) -> Tensor:
        """The scored tensor of a model output (``model(x)``), per ``output_key``.

        Raises:
            ExplainzooError: the declared part is missing or not a tensor.
        """
        return scored_output(out, self.output_key)

    # -- layers ------------------------------------------------------------
    @cached_property
    def layer_hints(self) -> LayerHints:
        """The family's hints, or those a built-in family gives for a bare model."""
        if self.hints is not None:
            return self.hints
        from .family import builtin_hints  # the families import this module

        return builtin_hints(self.model)

    @cached_property
    def probe(self) -> Probe:
        """One forward pass's record of every module's output layout."""
        with self._probe_lock, self.lock:
            return probe_model(self.model, self.input_size, self.layer_hints)

    @cached_property
    def layers(self) -> dict[str, str]:
        """Alias -> module path: ``conv1``, ``last``, ``stage1..N``."""
        if self.aliases is not None:
            return dict(self.aliases)
        return derive_aliases(self.model, self.probe, self.layer_hints)

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
            if self.num_classes == 0:
                raise ExplainzooError(
                    f"{self.name} is an embedding model with no classes; explain a similarity "
                    "to a reference embedding or a callable score instead of a class"
                )
            if not 0 <= target < self.num_classes:
                raise ExplainzooError(
                    f"class index {target} out of range for {self.name} "
                    f"({self.num_classes} classes: 0..{self.num_classes - 1})"
                )
            return target
        if isinstance(target, str):
            key = target.strip().lower()
            if key.isascii() and key.isdigit():  # "²", "①", "٣" are names, not indices
                return self.class_index(int(key))
            index = self._label_index
            if key in index:
                return index[key]
            raise unknown("class", target, self.labels, f"for {self.name}")
        if isinstance(target, float):
            raise ExplainzooError(
                f"a class index must be a whole number, got {target!r}; pass an int or a class name"
            )
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
