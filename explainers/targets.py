"""Targets: what an explanation explains, as one differentiable score per image.

Every method and every metric goes through this module: the ``target``
argument of a call becomes a :class:`Target` (:func:`as_target`), which is
resolved once per call against the model's scored output of the unmodified
input (:meth:`Target.resolve`) and then scores any output
(:meth:`Target.score`): the clean pass, gradients, perturbed copies,
deletion curves. The output is what the backbone declares as scored
(:meth:`~explainzoo.backbones.Backbone.scored_output`: a dict's ``"out"``, a
``.logits``, ...), taken in one place (:func:`explainzoo.explainers.mechanics.model_output`).

The targets (``from explainzoo.explainers import targets as T``):

* :class:`Class` ``(c)``: the logit of class ``c`` (None: each image's top-1;
  one per image with a list). Plain ints, names, None and lists become it.
* :class:`Contrast` ``(a, b)``: logit a - logit b, "why a rather than b".
* :class:`Classes` ``([c, ...])``: the sum of a class group's logits.
* :class:`Probability` ``(c)``: the softmax probability of class ``c``.
* :class:`Sigmoid` ``(i)``: sigmoid of logit ``i`` (multi-label heads).
* :class:`Region` ``(c, mask_or_box)``: a dense (N,K,H,W) output's class-c
  scores summed inside a mask or box (pytorch-grad-cam's
  ``SemanticSegmentationTarget``: ``(out[:, c] * mask).sum()``).
* :class:`Similarity` ``(reference)``: cosine similarity of the output (an
  embedding) to a reference embedding.
* :class:`Custom` ``(fn)``: any callable ``(output) -> (N,)`` (a bare callable
  becomes one).

:func:`parse` reads the CLI form (``"contrast:tiger cat,tabby"``, ``"prob:espresso"``).
Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391) is
linear in the score before its ReLU, so a contrast's map is the difference
of the two class maps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError

from .target_base import EMBEDDING_HINT, Custom, Similarity, Target, check_rows, logits_of, per_image

__all__ = [
    "Class", "Classes", "Contrast", "Custom", "Probability", "Region", "Sigmoid", "Similarity",
    "Target", "as_target", "parse", "resolve",
]


def _label(bb_labels: Sequence[str] | None, i: int) -> str:
    if bb_labels and 0 <= i < len(bb_labels):
        return bb_labels[i].split(",")[0].strip()
    return f"class {i}"


class Class(Target):
    """The logit of one class per image.

    Args:
        spec: None (each image's top-1), an index or class name, or one per image.
    """

    on_logits = True

    def __init__(self, spec: Any = None) -> None:
        if isinstance(spec, Tensor):
            spec = spec.tolist()
        if not (spec is None or isinstance(spec, int | str | Sequence)) or isinstance(spec, bool):
            raise ExplainzooError(
                f"target must be None, a class index or name, or one per image; got {spec!r}"
            )
        self.spec = spec
        self._indices: Tensor | None = None
        self._labels: Sequence[str] | None = None

    @property
    def needs_output(self) -> bool:
        return self._indices is None and self.spec is None

    @property
    def indices(self) -> Tensor | None:
        return self._indices

    @property
    def name(self) -> str:
        """The class's name ("top-1 class" or "per-image classes" when they differ)."""
        idx = self._indices
        if idx is not None:
            first = int(idx[0]) if idx.numel() else -1
            return _label(self._labels, first) if bool((idx == first).all()) else "per-image classes"
        if self.spec is None:
            return "top-1 class"
        return str(self.spec) if isinstance(self.spec, int | str) else "per-image classes"

    @property
    def description(self) -> str:
        return f"{self.name} (logit)"

    @classmethod
    def of(cls, indices: Tensor, labels: Sequence[str] | None = None) -> Class:
        """A resolved target from (N,) class indices (``labels`` name them)."""
        t = cls(None)
        t._indices, t._labels = indices.detach().long(), labels
        return t

    def resolve(
        self, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
        device: torch.device | None = None,
    ) -> Class:
        if self._indices is not None:
            return self
        if backbone.num_classes == 0:
            raise ExplainzooError(
                f"{backbone.name} has no class labels (an embedding model?), so class targets do not "
                f"apply; {EMBEDDING_HINT}"
            )
        if output is not None:
            n, device = output.shape[0], output.device
        if self.spec is None:
            if output is None:
                raise ExplainzooError("internal: the top-1 target needs the model's output to resolve")
            return Class.of(logits_of(output, self).detach().argmax(dim=1), backbone.labels)
        if n is None:
            raise ExplainzooError("internal: resolving a target needs the output or the batch size")
        return Class.of(_explicit(backbone, self.spec, n, device or torch.device("cpu")), backbone.labels)

    def score(self, output: Tensor) -> Tensor:
        if self._indices is None:
            raise ExplainzooError("internal: resolve the target before scoring")
        idx = self._indices.to(output.device)
        if idx.numel() == 1 and output.shape[0] != 1:
            idx = idx.expand(output.shape[0])
        return logits_of(output, self).gather(1, idx[:, None])[:, 0]

    def select(self, rows: Tensor) -> Class:
        if self._indices is None:
            raise ExplainzooError("internal: resolve the target before selecting rows")
        return Class.of(self._indices[rows.to(self._indices.device)], self._labels)

    def image(self, i: int) -> Class:
        if self._indices is not None:
            return Class.of(self._indices[i : i + 1], self._labels)
        if self.spec is None or isinstance(self.spec, int | str):
            return self
        return Class(self.spec[i])


def _explicit(bb: Backbone, spec: Any, n: int, device: torch.device) -> Tensor:
    """Class indices (N,) from an int/name or one per image."""
    if isinstance(spec, int | str):
        return torch.full((n,), bb.class_index(spec), dtype=torch.long, device=device)
    if len(spec) != n:
        raise ExplainzooError(f"got {len(spec)} targets for a batch of {n} images")
    return torch.tensor([bb.class_index(t) for t in spec], dtype=torch.long, device=device)


class _Composite(Target):
    """A target built from class parts (:class:`Class`), resolved and split together."""

    parts: tuple[Class, ...]

    def _with(self, parts: Sequence[Class], **changes: Any) -> _Composite:
        new = copy.copy(self)
        new.parts = tuple(parts)
        new.__dict__.update(changes)
        return new

    @property
    def needs_output(self) -> bool:
        return any(p.needs_output for p in self.parts)

    def resolve(
        self, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
        device: torch.device | None = None,
    ) -> Target:
        return self._with([p.resolve(backbone, output, n=n, device=device) for p in self.parts])

    def image(self, i: int) -> Target:
        return self._with([p.image(i) for p in self.parts])

    def select(self, rows: Tensor) -> Target:
        return self._with([p.select(rows) for p in self.parts])


class Contrast(_Composite):
    """Logit a - logit b: "why a rather than b" (each a :class:`Class` spec).

    Grad-CAM's map before its ReLU is linear in the score, so it is map(a) -
    map(b) (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391).
    """

    on_logits = True

    def __init__(self, a: Any, b: Any) -> None:
        self.parts = (as_class(a), as_class(b))

    @property
    def description(self) -> str:
        return f"{self.parts[0].name} - {self.parts[1].name} (logit contrast)"

    def score(self, output: Tensor) -> Tensor:
        return self.parts[0].score(output) - self.parts[1].score(output)


class Classes(_Composite):
    """The sum of a class group's logits (e.g. every cat class).

    Args:
        classes: class indices or names (at least one).
    """

    on_logits = True

    def __init__(self, classes: Sequence[Any]) -> None:
        if isinstance(classes, Tensor):
            classes = classes.tolist()
        if isinstance(classes, int | str) or not isinstance(classes, Sequence) or not classes:
            raise ExplainzooError(f"Classes takes a non-empty list of class indices or names, got {classes!r}")
        self.parts = tuple(as_class(c) for c in classes)

    @property
    def description(self) -> str:
        names = [p.name for p in self.parts]
        shown = " + ".join(names) if len(names) <= 3 else f"{' + '.join(names[:3])} + ... ({len(names)} classes)"
        return f"{shown} (sum of logits)"

    def score(self, output: Tensor) -> Tensor:
        return torch.stack([p.score(output) for p in self.parts]).sum(dim=0)


class Probability(_Composite):
    """The softmax probability of a class (None: each image's top-1)."""

    def __init__(self, c: Any = None) -> None:
        self.parts = (as_class(c),)

    @property
    def indices(self) -> Tensor | None:
        return self.parts[0].indices

    @property
    def description(self) -> str:
        return f"{self.parts[0].name} (softmax probability)"

    def score(self, output: Tensor) -> Tensor:
        return self.parts[0].score(logits_of(output, self).softmax(dim=1))


class Sigmoid(_Composite):
    """sigmoid(logit i): one label of a multi-label head (None: each image's top-1)."""

    def __init__(self, i: Any = None) -> None:
        self.parts = (as_class(i),)

    @property
    def indices(self) -> Tensor | None:
        return self.parts[0].indices

    @property
    def description(self) -> str:
        return f"{self.parts[0].name} (sigmoid)"

    def score(self, output: Tensor) -> Tensor:
        return self.parts[0].score(output).sigmoid()


class Region(_Composite):
    """A dense output's class scores summed inside a region (segmentation).

    For a model whose scored output is (N,K,H,W) (torchvision segmentation's
    ``out``), ``score = (out[:, c] * mask).sum((H, W))``: pytorch-grad-cam's
    ``SemanticSegmentationTarget`` (https://github.com/jacobgil/pytorch-grad-cam).

    Args:
        c: the class (index or name).
        where: a mask (H,W) or one per image (N,H,W) at the output's
            resolution (bool or float weights, tensor or array), or a box
            ``(x0, y0, x1, y1)`` in output pixels (end exclusive).
    """

    def __init__(self, c: Any, where: Any) -> None:
        if c is None or not isinstance(c, int | str):
            raise ExplainzooError(f"Region needs one class index or name, got {c!r}")
        self.parts = (as_class(c),)
        self.box: tuple[int, int, int, int] | None = None
        self.mask: Tensor | None = None
        if isinstance(where, tuple | list) and len(where) == 4 and all(isinstance(v, int) for v in where):
            x0, y0, x1, y1 = where
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ExplainzooError(f"Region box must be (x0, y0, x1, y1) with x0 < x1, y0 < y1, got {where}")
            self.box = (x0, y0, x1, y1)
            return
        mask = torch.as_tensor(where) if not isinstance(where, Tensor) else where
        if mask.ndim not in (2, 3) or mask.numel() == 0:
            raise ExplainzooError(
                f"Region takes a mask (H,W) or (N,H,W) or a box (x0, y0, x1, y1), got shape {tuple(mask.shape)}"
            )
        self.mask = (mask[None] if mask.ndim == 2 else mask).detach().float()

    @property
    def indices(self) -> Tensor | None:
        return self.parts[0].indices

    @property
    def description(self) -> str:
        where = f"box {self.box}" if self.box is not None else "the mask"
        return f"{self.parts[0].name} inside {where} (sum of dense class scores)"

    def resolve(self, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
                device: torch.device | None = None) -> Target:
        if self.mask is not None:
            check_rows(self.mask, output.shape[0] if output is not None else n, "Region mask")
        return super().resolve(backbone, output, n=n, device=device)

    def image(self, i: int) -> Target:
        mask = None if self.mask is None else per_image(self.mask, i)
        return self._with([p.image(i) for p in self.parts], mask=mask)

    def select(self, rows: Tensor) -> Target:
        mask = None if self.mask is None else per_image(self.mask, rows)
        return self._with([p.select(rows) for p in self.parts], mask=mask)

    def region(self, hw: tuple[int, int], device: torch.device) -> Tensor:
        """The (1 or N, H, W) float mask for an output of spatial size ``hw``."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x1 > hw[1] or y1 > hw[0]:
                raise ExplainzooError(f"Region box {self.box} exceeds the model's {hw[0]}x{hw[1]} output")
            m = torch.zeros(1, *hw, device=device)
            m[:, y0:y1, x0:x1] = 1
            return m
        if self.mask is None:
            raise ExplainzooError("internal: a Region has a box or a mask")
        if tuple(self.mask.shape[-2:]) != tuple(hw):
            got = "x".join(map(str, self.mask.shape[-2:]))
            raise ExplainzooError(
                f"Region mask is {got} but the model's output is {hw[0]}x{hw[1]}; pass a mask of the output's size"
            )
        return self.mask.to(device)

    def score(self, output: Tensor) -> Tensor:
        if output.ndim != 4:
            raise ExplainzooError(
                f"Region needs a dense (N,K,H,W) output, but the model's scored output has shape "
                f"{tuple(output.shape)}; use T.Class for a classifier"
            )
        idx = self.parts[0].indices
        if idx is None:
            raise ExplainzooError("internal: resolve the target before scoring")
        n, _, h, w = output.shape
        idx = idx.to(output.device).view(-1, 1, 1, 1).expand(n, 1, h, w)
        return (output.gather(1, idx)[:, 0] * self.region((h, w), output.device).to(output.dtype)).sum(dim=(1, 2))


def as_class(spec: Any) -> Class:
    """A :class:`Class` from a class spec (a Class is returned as is)."""
    return spec if isinstance(spec, Class) else Class(spec)


def as_target(target: Any) -> Target:
    """A :class:`Target` from what a caller passes: a Target as is, a callable
    as :class:`Custom`, anything else (None, index, name, per-image list) as :class:`Class`."""
    if isinstance(target, Target):
        return target
    if callable(target) and not isinstance(target, type | Tensor):
        return Custom(target)
    return Class(target)


def resolve(
    target: Any, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
    device: torch.device | None = None,
) -> Target:
    """``as_target(target).resolve(...)``: the one entry point of methods and metrics."""
    return as_target(target).resolve(backbone, output, n=n, device=device)


_KINDS: dict[str, Callable[[list[Any]], Target]] = {
    "logit": lambda a: Class(_one(a, "logit")),
    "class": lambda a: Class(_one(a, "class")),
    "contrast": lambda a: Contrast(*_two(a)),
    "classes": lambda a: Classes(a),
    "prob": lambda a: Probability(_one(a, "prob")),
    "probability": lambda a: Probability(_one(a, "probability")),
    "sigmoid": lambda a: Sigmoid(_one(a, "sigmoid")),
}


def _one(args: list[Any], kind: str) -> Any:
    if len(args) != 1:
        raise ExplainzooError(f"target '{kind}:' takes one class, got {len(args)}; e.g. '{kind}:tabby'")
    return args[0]


def _two(args: list[Any]) -> tuple[Any, Any]:
    if len(args) != 2:
        raise ExplainzooError(
            f"target 'contrast:' takes two classes, got {len(args)}; e.g. 'contrast:tiger cat,tabby'"
        )
    return args[0], args[1]


def _spec(token: str) -> Any:
    t = token.strip()
    if t.lower() in ("", "top1", "top-1", "none"):
        return None
    return int(t) if t.lstrip("-").isdigit() else t


def parse(text: str | None) -> Target:
    """A target from its command-line form (``--target``).

    ``"281"``, ``"tabby"``, ``"top1"`` (or empty): a class; ``"contrast:tiger cat,tabby"``;
    ``"classes:281,282,283"``; ``"prob:espresso"``; ``"sigmoid:3"``; ``"logit:tabby"``;
    a label typed back, ``"281: tabby, tabby cat"``, is class 281.
    Classes are separated by commas, or by ``|`` when a name contains commas
    (``"contrast:tabby, tabby cat|tiger cat"``).
    """
    text = (text or "").strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        return Class(_spec(text))
    kind = kind.strip().lower()
    if kind.isdigit():  # a choice's label typed back: "281: tabby, tabby cat"
        return Class(int(kind))
    if kind not in _KINDS:
        raise ExplainzooError(
            f"unknown target kind {kind!r} in {text!r}; use one of {', '.join(_KINDS)} "
            "(e.g. 'contrast:tiger cat,tabby')"
        )
    args = [_spec(t) for t in rest.split("|" if "|" in rest else ",")]
    return _KINDS[kind](args)
