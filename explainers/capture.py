"""Shared mechanics: capture one layer's output, targets, scores, maps.

The capture hook lives for one call. With ``grad=True`` the trunk below the
layer runs under ``no_grad`` (no autograd history: less time and memory); the
hook turns gradient recording on from that layer up and hands the rest of the
network a *copy* of the output, so an in-place op downstream
(``ReLU(inplace=True)``) cannot change what was captured. Gradients are taken
with ``torch.autograd.grad`` w.r.t. the captured tensor: no parameter ``.grad``
is written and backward stops at the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, remove_hook


class _StopForward(Exception):
    """Raised inside a hook to skip the rest of the forward pass."""


def capture(
    model: nn.Module,
    module: nn.Module,
    x: Tensor,
    *,
    path: str,
    grad: bool = False,
    stop: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run ``model(x)`` and return (``module``'s output, logits).

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

    handle = module.register_forward_hook(hook)
    logits: Tensor | None = None
    try:
        with torch.no_grad():
            try:
                logits = model(x)
            except _StopForward:
                pass
    finally:
        remove_hook(handle)
    if not captured:
        raise ExplainzooError(f"layer {path!r} did not run in the forward pass")
    if logits is not None and (not isinstance(logits, Tensor) or logits.ndim != 2):
        raise ExplainzooError(
            f"the model must return (N, num_classes) logits, got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    return captured[0], logits


def resolve_targets(bb: Backbone, target: Any, logits: Tensor) -> Tensor:
    """Class indices (N,) from None (top-1), an int/name, or one per image."""
    if target is None:
        return logits.detach().argmax(dim=1)
    return explicit_targets(bb, target, logits.shape[0], logits.device)


def explicit_targets(bb: Backbone, target: Any, n: int, device: torch.device) -> Tensor:
    """Class indices (N,) from an int/name or one per image (not None)."""
    if isinstance(target, Tensor):
        target = target.tolist()
    if isinstance(target, int | str) and not isinstance(target, bool):
        return torch.full((n,), bb.class_index(target), dtype=torch.long, device=device)
    if isinstance(target, Sequence):
        if len(target) != n:
            raise ExplainzooError(f"got {len(target)} targets for a batch of {n} images")
        idx = [bb.class_index(t) for t in target]
        return torch.tensor(idx, dtype=torch.long, device=device)
    raise ExplainzooError(f"target must be None, a class index or name, or one per image; got {target!r}")


def gather_scores(logits: Tensor, targets: Tensor) -> Tensor:
    """(N,) logits of the target classes."""
    return logits.gather(1, targets[:, None])[:, 0]


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(N,h,w) -> (N,H,W), bilinear as in the Grad-CAM seed."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize(maps: Tensor) -> Tensor:
    """Per image to [0,1]: divide by the max when non-negative, else min-max.

    An all-zero map stays zeros, never NaN.
    """
    lo, hi = torch.aminmax(maps.flatten(1), dim=1)
    shift = lo.clamp(max=0)
    span = hi - shift
    scale = torch.where(span > 0, 1.0 / span, torch.zeros_like(span))
    out = (maps - shift.view(-1, 1, 1)) * scale.view(-1, 1, 1)
    return out.nan_to_num_(nan=0.0, posinf=1.0, neginf=0.0).clamp_(0, 1).float()
