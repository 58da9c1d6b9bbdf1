"""The :class:`Explainer` template and its two families of steps.

``Explainer.explain`` does what every method shares, once: it locks the
backbone, puts the model in eval mode and restores its state in ``finally``,
validates the input, resolves the layer and builds a :class:`Context`. A method
is a small subclass that implements one step:

* :class:`AttributionExplainer` -> ``attribute(ctx)``: a raw (N,h,w) map; the
  template upsamples it to the input size and normalises it to [0,1].
* :class:`CAMExplainer` -> ``combine(A, G, ctx)``: activations (and gradients)
  of the layer -> a class activation map.
* :class:`GridExplainer` -> ``tiles(ctx)``: (N,K,C,h,w) tiles, laid out by the
  template as the notes' square grid.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, preserved_state
from explainzoo.backbones.errors import unknown
from explainzoo.backbones.preprocess import Preprocessing

from .capture import capture, explicit_targets, gather_scores, normalize, resolve_targets, upsample
from .result import Explanation


@dataclass(frozen=True)
class Option:
    """One explainer option: default, bounds and a line of documentation."""

    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    def coerce(self, name: str, value: Any) -> Any:
        """Validate ``value`` (strings from the CLI are converted)."""
        kind = type(self.default)
        try:
            if isinstance(value, str) and kind is not str:
                if kind is bool:
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes")
                else:
                    value = kind(value)
            elif kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
        except (TypeError, ValueError):
            raise ExplainzooError(f"option {name}={value!r} must be a {kind.__name__}") from None
        if self.default is not None and not isinstance(value, kind):
            raise ExplainzooError(f"option {name}={value!r} must be a {kind.__name__}")
        if self.choices is not None and value not in self.choices:
            raise ExplainzooError(f"option {name}={value!r} must be one of {list(self.choices)}")
        if self.low is not None and value < self.low:
            raise ExplainzooError(f"option {name}={value!r} must be >= {self.low}")
        if self.high is not None and value > self.high:
            raise ExplainzooError(f"option {name}={value!r} must be <= {self.high}")
        return value


@dataclass
class Context:
    """Everything one call needs; helpers implement the shared mechanics."""

    backbone: Backbone
    x: Tensor | None
    target: Any
    layer: str | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    @property
    def input_hw(self) -> tuple[int, int]:
        if self.x is None:
            return self.backbone.input_size
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    def require_x(self) -> Tensor:
        if self.x is None:
            raise ExplainzooError("this explainer needs an input image batch x")
        return self.x

    def to_map(self, out: Tensor) -> Tensor:
        """The layer's output as (N,C,h,w)."""
        assert self.layer is not None  # set by the template for layer methods
        return self.backbone.reshape(self.layer, out, self.input_hw)

    def targets(self, logits: Tensor) -> Tensor:
        return resolve_targets(self.backbone, self.target, logits)

    def known_targets(self, n: int) -> Tensor | None:
        """The call's targets for ``n`` images when given, None for "each image's top-1"."""
        if self.target is None:
            return None
        return explicit_targets(self.backbone, self.target, n, self.require_x().device)

    def activations(self, stop: bool = False) -> tuple[Tensor, Tensor | None]:
        """(A (N,C,h,w), logits or None) with no autograd at all."""
        x = self.require_x()
        out, logits = capture(self.model, self._module(), x, path=self.layer or "", stop=stop)
        return self.to_map(out), logits

    def activations_and_gradients(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(A, dScore/dA, targets, scores) for the layer, A and G (N,C,h,w).

        Backward runs from the target logits to the layer only.
        """
        x = self.require_x()
        out, logits = capture(self.model, self._module(), x, path=self.layer or "", grad=True)
        assert logits is not None
        targets = self.targets(logits)
        score = gather_scores(logits, targets)
        if not score.requires_grad:
            raise ExplainzooError(f"the class score does not depend on layer {self.layer!r}")
        (grad,) = torch.autograd.grad(score.sum(), out)
        return self.to_map(out.detach()), self.to_map(grad), targets, score.detach()

    def input_gradients(
        self, inputs: Tensor, targets: Tensor | None = None, target_row: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(d score / d input, targets, scores) for a batch of inputs.

        ``targets`` None resolves the call's target against these logits: per
        row, or, with ``target_row``, that row's class for every row (the
        clean image among copies of it).
        """
        leaf = inputs.detach().requires_grad_(True)  # a new tensor object: the caller's keeps its flags
        with torch.enable_grad():
            logits = self.model(leaf)
            if targets is None and target_row is not None:
                targets = self.targets(logits[target_row : target_row + 1].detach()).expand(logits.shape[0])
            elif targets is None:
                targets = self.targets(logits)
            score = gather_scores(logits, targets)
            (grad,) = torch.autograd.grad(score.sum(), leaf)
        return grad, targets, score.detach()

    def _module(self) -> nn.Module:
        if self.layer is None:
            raise ExplainzooError("this explainer needs a layer")
        return self.backbone.module(self.layer)


def as_backbone(backbone: Backbone | nn.Module) -> Backbone:
    """Accept a :class:`Backbone` or a bare classifier module."""
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, nn.Module):
        n = None
        for m in reversed(list(backbone.modules())):
            if isinstance(m, nn.Linear):
                n = m.out_features
                break
        labels = [f"class_{i}" for i in range(n or 0)]
        return Backbone(type(backbone).__name__, backbone, Preprocessing(), labels)
    raise ExplainzooError(f"expected a Backbone or nn.Module, got {type(backbone).__name__}")


def _check_input(x: Any, bb: Backbone) -> Tensor:
    if not isinstance(x, Tensor):
        raise ExplainzooError(
            f"x must be a (N,3,H,W) tensor (use backbone.preprocess(image)), got {type(x).__name__}"
        )
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        raise ExplainzooError(f"x must have shape (N,3,H,W) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ExplainzooError(f"x must be a float tensor, got {x.dtype}")
    # a finite sum proves every element finite in one pass; only otherwise look closer
    if not (torch.isfinite(x.sum()) or torch.isfinite(x).all()):
        raise ExplainzooError("x contains NaN or infinite values")
    param = next(bb.model.parameters(), None)
    device = param.device if param is not None else x.device
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if x.is_inference():
        x = x.clone()
    return x.detach().to(device=device, dtype=dtype)


class Explainer(abc.ABC):
    """Base class of every method; subclasses implement one template step.

    Class attributes:
        description: one line for listings.
        paper: the reference (title and link).
        uses_layer: whether the ``layer`` argument applies.
        default_layer: the alias used when ``layer`` is None.
        needs_input: False for methods that read only weights (``filters``).
        options: name -> :class:`Option`.
    """

    name: str = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = False
    default_layer: ClassVar[str] = "last"
    needs_input: ClassVar[bool] = True
    options: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, **options: Any) -> None:
        cfg = {k: o.default for k, o in self.options.items()}
        for key, value in options.items():
            if key not in self.options:
                raise unknown(
                    "option", key, self.options,
                    f"for {self.name or type(self).__name__} (options: {', '.join(self.options) or 'none'})",
                )
            cfg[key] = self.options[key].coerce(key, value)
        self.config: dict[str, Any] = cfg

    def explain(
        self,
        backbone: Backbone | nn.Module,
        x: Tensor | None = None,
        target: Any = None,
        layer: str | None = None,
    ) -> Explanation:
        """Explain ``x`` (N,3,H,W) on ``backbone``.

        Args:
            target: None (each image's top-1 class), a class index or name, or
                one per image.
            layer: alias or module path; None means the method's default.
        """
        bb = as_backbone(backbone)
        if layer is not None and not self.uses_layer:
            raise ExplainzooError(f"{self.name or type(self).__name__} works on the input and takes no layer")
        with bb.lock, preserved_state(bb.model), torch.inference_mode(False):
            if x is not None or self.needs_input:
                x = _check_input(x, bb)
            path = bb.resolve_layer(layer or self.default_layer) if self.uses_layer else None
            ctx = Context(bb, x, target, path, dict(self.config))
            return self._run(ctx)

    __call__ = explain

    @abc.abstractmethod
    def _run(self, ctx: Context) -> Explanation:
        """The template itself (implemented by the two families below)."""

    def _result(self, ctx: Context, **fields: Any) -> Explanation:
        return Explanation(
            method=self.name or type(self).__name__,
            backbone=ctx.backbone.name,
            layer=ctx.layer,
            options=dict(self.config),
            **fields,
        )


class AttributionExplainer(Explainer):
    """Template: ``attribute`` -> upsample to the input -> normalise to [0,1]."""

    @abc.abstractmethod
    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        """Return (raw (N,h,w) map, targets (N,), scores (N,))."""

    def _run(self, ctx: Context) -> Explanation:
        raw, targets, scores = self.attribute(ctx)
        raw = torch.nan_to_num(raw.detach().float(), nan=0.0)
        maps = normalize(upsample(raw, ctx.input_hw))
        return self._result(ctx, maps=maps, raw=raw, targets=targets, scores=scores)


class CAMExplainer(AttributionExplainer):
    """Template for class activation maps on a layer: one ``combine`` step.

    ``needs_gradient`` selects whether ``combine`` receives dScore/dA; the
    result is passed through ReLU (``relu``) before upsampling.
    """

    uses_layer = True
    needs_gradient: ClassVar[bool] = True
    relu: ClassVar[bool] = True

    @abc.abstractmethod
    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        """Activations A (N,C,h,w) and gradients G -> map (N,h,w)."""

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        if self.needs_gradient:
            A, G, targets, scores = ctx.activations_and_gradients()
        else:
            A, logits = ctx.activations()
            assert logits is not None
            targets = ctx.targets(logits)
            scores = gather_scores(logits, targets)
            G = None
        cam = self.combine(A, G, ctx)
        return (cam.clamp(min=0) if self.relu else cam), targets, scores


def tile(tiles: Tensor) -> Tensor:
    """Lay (K,C,h,w) tiles out as the notes' square grid -> (C, n(h+2), n(w+2)).

    As in the notes: min-max normalise all tiles together, pad the count to
    n*n (n = ceil(sqrt(K))) and each tile by 2 pixels right and bottom, all
    with the value 1, then tile row by row. A constant input gives zeros.
    """
    k, c, h, w = tiles.shape
    data = tiles.detach().float()
    lo, hi = data.min(), data.max()
    data = (data - lo) / (hi - lo) if hi > lo else torch.zeros_like(data)
    n = math.ceil(math.sqrt(k))
    padded = torch.ones(n * n, c, h + 2, w + 2, dtype=data.dtype, device=data.device)
    padded[:k, :, :h, :w] = data
    grid = padded.view(n, n, c, h + 2, w + 2).permute(2, 0, 3, 1, 4)
    return grid.reshape(c, n * (h + 2), n * (w + 2))


class GridExplainer(Explainer):
    """Template: ``tiles`` -> one square grid image per input."""

    uses_layer = True

    @abc.abstractmethod
    def tiles(self, ctx: Context) -> Tensor:
        """Return (N,K,C,h,w) tiles (C is 1 or 3)."""

    def _run(self, ctx: Context) -> Explanation:
        tiles = self.tiles(ctx)
        grid = torch.stack([tile(t) for t in tiles])
        return self._result(ctx, grid=grid, tiles=tiles)
