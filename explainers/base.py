"""The :class:`Explainer` template and its three families of steps.

``Explainer.explain`` does what every method shares, once: it makes the
call's deadlines active (:mod:`.deadline`), locks the backbone (waiting at most
until the deadline), puts the model in eval mode and restores its state in
``finally``, validates the input, resolves the layer and builds a
:class:`Context`; after the method ran it checks the result
(:mod:`.validate`: shapes, batch size, dtype, range, finite scores, target
range), naming the explainer at fault. :meth:`Explainer.estimate` gives a
call's cost from the options' declarations (:mod:`.budget`). A method is a
small subclass that implements one step:

* :class:`AttributionExplainer` -> ``attribute(ctx)``: a raw (N,h,w) map; the
  template upsamples it to the input size and scales it to [0,1].
* :class:`CAMExplainer` -> ``weights(A, G, ctx)``: the (N,C) channel weights
  of a layer's activations (or ``combine`` where the map is no weighted sum).
* :class:`GridExplainer` -> ``tiles(ctx)``: (N,K,C,h,w) tiles, laid out by the
  template as the notes' square grid.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, preserved_state
from explainzoo.backbones.errors import unknown
from explainzoo.backbones.preprocess import Preprocessing

from .budget import Cost, default_effective, estimate_cost, input_shape
from .context import Context
from .deadline import Deadline, acquire, as_deadlines, deadline_scope
from .mechanics import scale_unit, upsample
from .options import Option
from .result import Explanation
from .validate import ExplainerContractError, check_attribution, check_result, check_tiles

__all__ = [
    "AttributionExplainer", "CAMExplainer", "Context", "Explainer", "ExplainerContractError",
    "GridExplainer", "Option", "as_backbone", "tile",
]


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
        kind: ``"map"`` (attribution maps) or ``"grid"`` (tiles); the result's kind.
        description: one line for listings.
        paper: the reference (title and link).
        uses_layer: whether the ``layer`` argument applies.
        default_layer: the alias used when ``layer`` is None.
        needs_input: False for methods that read only weights (``filters``).
        options: name -> :class:`Option` (each declares whether it scales the cost).
        base_passes: passes of the whole model per image the method makes
            whatever its options (see :meth:`estimate`).
    """

    name: str = ""
    kind: ClassVar[str] = "map"
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = False
    default_layer: ClassVar[str] = "last"
    needs_input: ClassVar[bool] = True
    options: ClassVar[Mapping[str, Option]] = {}
    base_passes: ClassVar[int] = 1

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

    @classmethod
    def cost_options(cls) -> dict[str, Option]:
        """The options that scale a call's cost (``Option.cost`` set), by name."""
        return {k: o for k, o in cls.options.items() if o.cost is not None}

    # -- cost ---------------------------------------------------------------------------

    def estimate(
        self, backbone: Backbone | nn.Module, x_shape: Any = None, layer: str | None = None
    ) -> Cost:
        """The estimated cost of ``explain(backbone, x, layer=layer)`` with this instance's options.

        From declarations only (see :mod:`explainzoo.explainers.budget`):
        ``base_passes`` + the effective value of every ``cost="passes"`` option
        + the largest of the ``cost="inverse"`` ones + :meth:`extra_passes`;
        ``batch`` from the ``cost="batch"`` options. Runs no model pass (a
        layer's channel count comes from the backbone's probe: the first
        call on a backbone never probed runs it, under the backbone's lock).

        Args:
            backbone: the backbone to run on.
            x_shape: the input's shape (N,3,H,W) or (3,H,W); None: one image at
                the backbone's input size.
            layer: as in :meth:`explain` (None: the method's default).

        Returns:
            A :class:`~explainzoo.explainers.budget.Cost`: ``passes`` per image
            (``math.inf`` for an unbounded value the method cannot bound),
            ``batch`` (most images in one pass), ``images``, ``by_option``.
        """
        bb = as_backbone(backbone)
        n, hw = input_shape(x_shape, bb)
        return estimate_cost(self, bb, n, hw, self._layer_path(bb, layer))

    def effective(
        self, name: str, value: Any, backbone: Backbone, hw: tuple[int, int], layer: str | None
    ) -> float:
        """Passes per image that cost option ``name`` set to ``value`` stands for.

        The default reads the declaration (:func:`~explainzoo.explainers.budget.default_effective`):
        the value of a ``"passes"`` option, ``math.inf`` for its ``unbounded``
        value. Override it where the method knows better (Score-CAM's
        ``max_channels=0`` is the layer's channel count); ``layer`` is the
        resolved path, ``hw`` the input size.
        """
        return default_effective(self.options[name], value, hw)

    def extra_passes(self, backbone: Backbone, hw: tuple[int, int], layer: str | None) -> float:
        """Passes per image that no option spells (Ablation-CAM: one per channel); 0 by default."""
        return 0.0

    def _cheaper(self) -> str:
        """The settings a deadline error suggests, from the cost declarations."""
        parts = []
        for name, o in self.cost_options().items():
            if o.cost in ("passes", "gradients"):
                parts.append(f"fewer {name}" + ("" if o.unbounded is None else f" (not {o.unbounded!r})"))
            elif o.cost == "inverse":
                parts.append(f"a larger {name}")
        return "use " + " or ".join(parts) if parts else "use a smaller input"

    # -- the call -----------------------------------------------------------------------

    def explain(
        self,
        backbone: Backbone | nn.Module,
        x: Tensor | None = None,
        target: Any = None,
        layer: str | None = None,
        *,
        deadline: Deadline | float | None = None,
        cancel: Any = None,
    ) -> Explanation:
        """Explain ``x`` (N,3,H,W) on ``backbone``.

        Args:
            target: None (each image's top-1 class), a class index or name, one
                per image, or a :class:`~explainzoo.explainers.targets.Target`.
            layer: alias or module path; None means the method's default.
            deadline: seconds from now, or a :class:`~explainzoo.explainers.deadline.Deadline`
                (also one made active with ``with Deadline(...)`` applies).
            cancel: a cancellation token: a :class:`Deadline` (``.cancel()``),
                a :class:`threading.Event` or a callable returning True.

        Raises:
            DeadlineExceeded: the deadline passed or the call was cancelled
                (checked between chunks; the model's state is restored).
            BackboneBusy: another call held the backbone past the deadline.
            ExplainerContractError: the method returned a malformed result.
        """
        with self.context(backbone, x, target, layer, deadline=deadline, cancel=cancel) as ctx:
            exp = self._run(ctx)
        self._check_result(exp, ctx)
        return exp

    __call__ = explain

    @contextmanager
    def context(
        self, backbone: Backbone | nn.Module, x: Tensor | None = None, target: Any = None,
        layer: str | None = None, *, deadline: Deadline | float | None = None, cancel: Any = None,
    ) -> Iterator[Context]:
        """The :class:`Context` of one call, inside the template's guarantees.

        The deadlines are active, the backbone's lock is held (waiting at most
        until the earliest active deadline), the model is in eval mode and its
        state is restored on exit; ``x`` is validated and the layer resolved.
        """
        bb = as_backbone(backbone)
        deadlines = as_deadlines(deadline, cancel)
        with deadline_scope(*deadlines, what=f"explainer '{self._label()}'", hint=self._cheaper()), \
                acquire(bb.lock, bb.name), preserved_state(bb.model), torch.inference_mode(False):
            if x is not None or self.needs_input:
                x = _check_input(x, bb)
            yield Context(bb, x, target, self._layer_path(bb, layer), dict(self.config))

    def _check_result(self, exp: Any, ctx: Context) -> None:
        """The template's check of any result (see :mod:`explainzoo.explainers.validate`)."""
        n = 1 if ctx.x is None else int(ctx.x.shape[0])
        logits = getattr(exp, "logits", None)  # (N,K) or dense (N,K,...): K classes
        classes = int(logits.shape[1]) if isinstance(logits, Tensor) and logits.ndim >= 2 else None
        classes = classes or ctx.backbone.num_classes
        check_result(self, exp, n, ctx.input_hw, classes or None)

    def _label(self) -> str:
        return self.name or type(self).__name__

    def _layer_path(self, bb: Backbone, layer: str | None) -> str | None:
        if layer is not None and not self.uses_layer:
            raise ExplainzooError(f"{self._label()} works on the input and takes no layer; drop layer=")
        return bb.resolve_layer(layer or self.default_layer) if self.uses_layer else None

    @abc.abstractmethod
    def _run(self, ctx: Context) -> Explanation:
        """The template itself (implemented by the families below)."""

    def _result(self, ctx: Context, **fields: Any) -> Explanation:
        logits = ctx.clean_logits
        return Explanation(
            method=self.name or type(self).__name__,
            backbone=ctx.backbone.name,
            layer=ctx.layer,
            options=dict(self.config),
            kind=self.kind,
            logits=None if logits is None else logits.detach().float(),
            **{**ctx.result_fields(), **fields},  # the target's description and resolved target
        )


class AttributionExplainer(Explainer):
    """Template: ``attribute`` -> upsample to the input -> scale to [0,1]."""

    kind = "map"

    @abc.abstractmethod
    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        """Return (raw (N,h,w) map, targets (N,), scores (N,)).

        ``ctx.clean()`` gives the targets and scores of the unmodified input
        (one cached forward pass, or the pass the method made anyway).
        """

    def _run(self, ctx: Context) -> Explanation:
        raw, targets, scores = self.attribute(ctx)
        check_attribution(self, raw, 1 if ctx.x is None else int(ctx.x.shape[0]))
        raw = torch.nan_to_num(raw.detach().float(), nan=0.0)
        maps = scale_unit(upsample(raw, ctx.input_hw))
        return self._result(ctx, maps=maps, raw=raw, targets=targets, scores=scores)


class CAMExplainer(AttributionExplainer):
    """Template for class activation maps on a layer.

    The steps, in the style of pytorch-grad-cam's ``get_cam_weights`` and
    torchcam's ``_get_weights``:

    1. the layer's activations A (N,C,h,w) and, when ``needs_gradient``, the
       gradients G = dScore/dA (one forward pass, also the clean pass);
    2. :meth:`weights` ``(A, G, ctx) -> (N,C)``: the channel weights, the one
       step of every channel-weight CAM (from gradients or from extra
       forward passes: ``ctx.clean()`` and ``ctx.layer_output()`` are cached);
    3. :meth:`combine` ``(A, G, ctx) -> (N,h,w)``: ``sum_c w_c A_c`` by
       default; override it instead of :meth:`weights` only where the map is
       not a weighted sum of channels (Layer-CAM, HiResCAM, Eigen-CAM);
    4. ReLU (``relu``), then the template upsamples and scales to [0,1].

    :meth:`cam` (in a call) and :meth:`raw_map` (a whole call) give the map
    of steps 1-3, with or without the ReLU, for composition.
    """

    uses_layer = True
    needs_gradient: ClassVar[bool] = True
    relu: ClassVar[bool] = True

    def weights(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        """Channel weights (N,C) from A and G (N,C,h,w)."""
        raise NotImplementedError(f"{type(self).__name__} must implement weights() or combine()")

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        """Activations A (N,C,h,w) and gradients G -> map (N,h,w): ``sum_c w_c A_c``."""
        w = self.weights(A, G, ctx)
        if not isinstance(w, Tensor) or tuple(w.shape) != tuple(A.shape[:2]):
            raise ExplainerContractError(
                f"explainer '{self._label()}' returned channel weights of shape "
                f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}, expected (N,C) = "
                f"{tuple(A.shape[:2])} (a bug in its weights())"
            )
        return (w[:, :, None, None].to(A.dtype) * A).sum(dim=1)

    def cam(self, ctx: Context, relu: bool | None = None) -> Tensor:
        """The (N,h,w) float32 map at the layer's resolution, NaN-free.

        Args:
            relu: apply the ReLU; None: the method's own choice (``relu``).
                ``relu=False`` gives the signed map (linear in the score for
                Grad-CAM).
        """
        if self.needs_gradient:
            A, G, _, _ = ctx.activations_and_gradients()
        else:
            A, G = ctx.to_map(ctx.layer_output()), None
        cam = torch.nan_to_num(self.combine(A, G, ctx).detach().float(), nan=0.0)
        return cam.clamp(min=0) if (self.relu if relu is None else relu) else cam

    def raw_map(
        self, backbone: Backbone | nn.Module, x: Tensor, target: Any = None, layer: str | None = None,
        relu: bool = False,
    ) -> Tensor:
        """The map of ``x`` before ReLU (``relu=False``), upsampling and scaling.

        Same call as :meth:`explain`; returns (N,h,w) float32 at the layer's
        resolution. For Grad-CAM it is linear in the score: the map of a
        difference of scores is the difference of the maps.
        """
        with self.context(backbone, x, target, layer) as ctx:
            return self.cam(ctx, relu=relu)

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        cam = self.cam(ctx)
        clean = ctx.clean()
        return cam, clean.targets, clean.scores


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

    kind = "grid"
    uses_layer = True

    @abc.abstractmethod
    def tiles(self, ctx: Context) -> Tensor:
        """Return (N,K,C,h,w) tiles (C is 1 or 3)."""

    def _run(self, ctx: Context) -> Explanation:
        tiles = self.tiles(ctx)
        check_tiles(self, tiles, 1 if ctx.x is None else int(ctx.x.shape[0]))
        grid = torch.stack([tile(t) for t in tiles])
        return self._result(ctx, grid=grid, tiles=tiles)
