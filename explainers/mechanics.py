"""Shared mechanics, once: hooks, forward passes, capture, scaling, perturbation.

* :func:`temporary_hook`: every hook an explainer or metric registers lives
  for one ``with`` block (registered in ``try``, removed in ``finally``).
* :func:`model_output`: the one place a model's output is read: the part the
  backbone declares as scored (``Backbone.scored_output``: a dict's ``"out"``,
  a ``.logits``); every pass below goes through it.
* :func:`forward_logits` / :func:`check_logits`: the model under
  ``torch.inference_mode`` and the one check that it returned one row per
  image (class logits, a dense map or an embedding: what each needs is
  checked by the target that scores it).
* :func:`capture`: one layer's output and the logits in one pass. With
  ``grad=True`` the trunk below the layer runs under ``no_grad`` (no autograd
  history); the hook turns gradient recording on from that layer up and hands
  the rest of the network a *copy* of the output, so an in-place op downstream
  (``ReLU(inplace=True)``) cannot change what was captured. Gradients are then
  taken with ``torch.autograd.grad`` w.r.t. the captured tensor: no parameter
  ``.grad`` is written and backward stops at the layer.
* :func:`upsample`, :func:`scale_unit` (the template's per-image [0,1] rule)
  and :func:`minmax_per_map` (min-max of each map: Score-CAM's masks).
* Many-copy methods (Score-CAM, Ablation-CAM, Occlusion, RISE, SmoothGrad,
  Integrated Gradients): :func:`chunks` bounds memory (at most ``batch_size``
  copies exist at a time), :func:`masked_scores` blends an image with a fill
  value through masks and scores every copy, :func:`generator` gives each
  image a fresh seeded RNG so ``explain(batch)[i]`` equals ``explain(x_i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, remove_hook, scored_output

from .deadline import check_deadline
from .options import FILL_CHOICES
from .targets import Target

__all__ = [
    "FILL_CHOICES",
    "blend",
    "capture",
    "check_logits",
    "chunked_masked_scores",
    "chunks",
    "fill_value",
    "forward_logits",
    "generator",
    "masked_scores",
    "minmax_per_map",
    "model_output",
    "scale_unit",
    "temporary_hook",
    "upsample",
]

_REGISTER = {
    "forward": "register_forward_hook",
    "forward_pre": "register_forward_pre_hook",
    "backward": "register_full_backward_hook",
    "backward_pre": "register_full_backward_pre_hook",
}


@contextmanager
def temporary_hook(module: nn.Module, fn: Callable[..., Any], kind: str = "forward") -> Iterator[Any]:
    """Register ``fn`` on ``module`` for the ``with`` block only.

    Args:
        kind: ``"forward"``, ``"forward_pre"``, ``"backward"`` or ``"backward_pre"``.

    Yields:
        The hook's handle. It is removed with :func:`explainzoo.backbones.remove_hook`
        when the block exits, also on an exception.
    """
    if kind not in _REGISTER:
        raise ValueError(f"hook kind must be one of {list(_REGISTER)}, got {kind!r}")
    handle = getattr(module, _REGISTER[kind])(fn)
    try:
        yield handle
    finally:
        remove_hook(handle)


def model_output(model: Backbone | nn.Module, inputs: Tensor) -> Tensor:
    """The scored part of ``model(inputs)``: the one place a model output is read.

    A :class:`Backbone` applies its ``output_key`` (``Backbone.scored_output``);
    a bare module's output is taken as is (a tensor) or its ``.logits``.
    """
    if isinstance(model, Backbone):
        return model.scored_output(model.model(inputs))
    return scored_output(model(inputs))


def check_logits(logits: Any, rows: int | None = None) -> Tensor:
    """``logits`` if it is a tensor with one row per image (any rows when None).

    Class logits are (rows, classes); dense outputs (rows, K, H, W) and
    embeddings (rows, D) pass too: the target that scores them checks the shape
    it needs (:mod:`.targets`).

    Raises:
        ExplainzooError: the model returned something else.
    """
    if not isinstance(logits, Tensor) or logits.ndim < 2 or (rows is not None and logits.shape[0] != rows):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ExplainzooError(
            f"the model must return one output row per image, (N, classes) logits or (N, ...), got {got}"
        )
    return logits


def forward_logits(model: Backbone | nn.Module, inputs: Tensor, rows: int | None = None) -> Tensor:
    """The scored output of ``model(inputs)`` (:func:`model_output`) under
    ``torch.inference_mode``, as an ordinary tensor.

    Args:
        rows: the number of logit rows expected (default: one per input; a
            hook that substitutes a layer's output may change it).
    """
    with torch.inference_mode():
        logits = model_output(model, inputs)
    check_logits(logits, inputs.shape[0] if rows is None else rows)
    return logits.clone()  # outside inference mode: a normal tensor


class _StopForward(Exception):
    """Raised inside a hook to skip the rest of the forward pass."""


def capture(
    model: Backbone | nn.Module,
    module: nn.Module,
    x: Tensor,
    *,
    path: str,
    grad: bool = False,
    stop: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run ``model(x)`` once and return (``module``'s output, the scored output).

    Args:
        grad: make the captured output a leaf that requires grad and record the
            graph from there to the logits (nothing below it).
        stop: skip everything after the layer (logits is None then).
    """
    captured: list[Tensor] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> Any:
        if not isinstance(out, Tensor):
            raise ExplainzooError(
                f"layer {path!r} returns {type(out).__name__}, not a tensor; pick one of its submodules"
            )
        if captured:
            raise ExplainzooError(
                f"layer {path!r} runs more than once per forward pass (a shared module); "
                "pick a layer that runs once"
            )
        if stop:
            captured.append(out.detach())
            raise _StopForward
        if grad:
            torch.set_grad_enabled(True)  # restored when the caller's no_grad block exits
            leaf = out.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf.clone()
        captured.append(out.detach().clone())
        return None

    logits: Tensor | None = None
    with temporary_hook(module, hook), torch.no_grad():
        try:
            logits = model_output(model, x)
        except _StopForward:
            pass
    if not captured:
        raise ExplainzooError(f"layer {path!r} did not run in the forward pass")
    if logits is not None:
        check_logits(logits)
    return captured[0], logits


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(N,h,w) -> (N,H,W), bilinear as in the Grad-CAM seed."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def scale_unit(maps: Tensor) -> Tensor:
    """(N,H,W) per image to [0,1], the rule of every map: divide by the max
    when non-negative, else min-max. An all-zero map stays zeros, never NaN."""
    lo, hi = torch.aminmax(maps.flatten(1), dim=1)
    shift = lo.clamp(max=0)
    span = hi - shift
    scale = torch.where(span > 0, 1.0 / span, torch.zeros_like(span))
    out = (maps - shift.view(-1, 1, 1)) * scale.view(-1, 1, 1)
    return out.nan_to_num_(nan=0.0, posinf=1.0, neginf=0.0).clamp_(0, 1).float()


def minmax_per_map(maps: Tensor) -> Tensor:
    """Each (h,w) map of (K,h,w) min-max scaled to [0,1]; a constant map gives zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    span = flat.max(dim=1).values.view(-1, 1, 1) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - lo) / safe, torch.zeros_like(maps))


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``size``.

    Checks the active deadlines before each chunk (:func:`~.deadline.check_deadline`):
    every many-copy loop stops cooperatively with ``DeadlineExceeded``.
    """
    if size < 1:
        raise ExplainzooError(f"batch_size must be >= 1, got {size}")
    for start in range(0, total, size):
        check_deadline()
        yield start, min(start + size, total)


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator for one image: draws do not depend on the batch."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def fill_value(bb: Backbone, kind: str, like: Tensor) -> Tensor:
    """(3,1,1) model-input value of a removed pixel (see :data:`FILL_CHOICES`)."""
    if kind == "mean":
        return torch.zeros(3, 1, 1, dtype=like.dtype, device=like.device)
    if kind == "black":
        mean = torch.tensor(bb.preprocessing.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(bb.preprocessing.std, dtype=like.dtype, device=like.device)
        return (-mean / std).view(3, 1, 1)
    raise ExplainzooError(f"baseline must be one of {list(FILL_CHOICES)}, got {kind!r}")


def blend(x: Tensor, masks: Tensor, fill: Tensor) -> Tensor:
    """``x * m + fill * (1 - m)`` for each mask: (3,H,W), (K,H,W) -> (K,3,H,W)."""
    m = masks[:, None].to(x.dtype)
    return x[None] * m + fill[None] * (1 - m)


def masked_scores(
    model: Backbone | nn.Module, x: Tensor, masks: Tensor, fill: Tensor, target: Target, softmax: bool = False
) -> Tensor:
    """(K,) scores of one image (3,H,W) seen through K masks (K,H,W).

    ``target`` is the image's resolved target (``target.image(i)``); with
    ``softmax`` it scores the softmax probabilities instead of the logits.
    """
    with torch.inference_mode():
        inputs = blend(x, masks, fill)
    return target.scores(forward_logits(model, inputs), softmax=softmax)


def chunked_masked_scores(
    model: Backbone | nn.Module,
    x: Tensor,
    make_masks: Callable[[int, int], Tensor],
    count: int,
    fill: Tensor,
    target: Target,
    batch_size: int,
    softmax: bool = False,
) -> Tensor:
    """(count,) scores of ``x`` through masks built chunk by chunk.

    ``make_masks(start, stop)`` returns the (stop-start, H, W) masks of that
    chunk, so at most ``batch_size`` masks and copies exist at a time.
    """
    out = [
        masked_scores(model, x, make_masks(a, b), fill, target, softmax)
        for a, b in chunks(count, batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, device=x.device)
