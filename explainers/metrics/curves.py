"""Deletion and insertion curves (Petsiuk et al., RISE: Randomized Input
Sampling for Explanation of Black-box Models, BMVC 2018,
https://arxiv.org/abs/1806.07421).

Pixels are removed from (deletion) or revealed on (insertion) the image in the
order of the map, most important first, in ``steps`` equal steps; the curve
is the explained target's score at each step (scored by
:mod:`explainzoo.explainers.targets`, like every method: ``target.scores(out,
softmax=True)``, the softmax probability of a class target -- a group's total
probability, p_a - p_b for a contrast -- and the value itself of a target
that is no logit: ``T.Probability``, ``T.Sigmoid``, ``T.Region``, a
similarity or a callable), its AUC the
trapezoid over the removed fraction in [0, 1]. Faithful maps have a *low*
deletion AUC and a *high* insertion AUC. Cost: ``N * (steps + 1)`` images
through the model (plus ``N`` when the target needs the clean output, e.g.
None: top-1), in ``ceil(N * (steps + 1) / batch_size)`` batched calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, preserved_state

from ..base import as_backbone
from ..deadline import acquire
from ..mechanics import chunks, forward_logits
from ..targets import Target, as_target
from .similarity import gaussian_kernel1d

__all__ = ["DEFAULT_BATCH_SIZE", "MAX_STEPS", "Curve", "blur", "deletion", "insertion"]

#: Server-side cap on the number of deletion / insertion steps (the demo clamps to it).
MAX_STEPS = 64
#: Default number of images per forward pass.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve for a batch of N images.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: (steps+1,) fraction of pixels removed / revealed, 0 to 1.
        probs: (N, steps+1) the target's score at each step (for a class: its
            softmax probability).
        auc: (N,) trapezoid area under ``probs`` over ``fractions`` (in [0, 1]
            for probabilities).
        targets: (N,) the class explained (-1 for a target that is no one class).
        baseline: the baseline used (``"zero"``, ``"mean"``, ``"blur"`` or ``"tensor"``).
        forward_passes: images sent through the model.
        score: the target's description (what ``probs`` measures).
    """

    kind: str
    fractions: Tensor
    probs: Tensor
    auc: Tensor
    targets: Tensor
    baseline: str
    forward_passes: int
    score: str = ""

    @property
    def mean_auc(self) -> float:
        """The AUC averaged over the batch."""
        return float(self.auc.mean())


def check_batch(x: Any, maps: Any) -> tuple[Tensor, Tensor]:
    """(x, maps as NaN-free float32) after checking that they belong together."""
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ExplainzooError(f"x must be a (N,3,H,W) tensor, got {shape}")
    if not isinstance(maps, Tensor):
        raise ExplainzooError(f"maps must be a (N,H,W) tensor, got {type(maps).__name__}")
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape != (x.shape[0], x.shape[2], x.shape[3]):
        raise ExplainzooError(
            f"maps of shape {tuple(maps.shape)} do not match the input {tuple(x.shape)}: "
            f"expected ({x.shape[0]},{x.shape[2]},{x.shape[3]}) (use exp.maps)"
        )
    return x, torch.nan_to_num(maps.detach().float(), nan=0.0)


def check_count(value: Any, what: str, cap: int | None = None, low: int = 1) -> int:
    """``value`` if it is an integer in ``low..cap``, else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ExplainzooError(f"{what} must be {kind}, got {value!r}")
    if cap is not None and value > cap:
        raise ExplainzooError(f"{what}={value} exceeds the cap of {cap}")
    return value


def batched_logits(model: Backbone | nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """float32 scored outputs of ``x`` in chunks of ``batch_size`` (caller holds the lock)."""
    return torch.cat([forward_logits(model, x[a:b]).float() for a, b in chunks(x.shape[0], batch_size)])


def resolve_metric_target(bb: Backbone, target: Any, x: Tensor, batch_size: int) -> tuple[Target, int]:
    """(the resolved target of ``x``, forward passes spent resolving it)."""
    spec = as_target(target)
    if not spec.needs_output:
        return spec.resolve(bb, n=x.shape[0], device=x.device), 0
    return spec.resolve(bb, batched_logits(bb, x, batch_size)), x.shape[0]


def blur(x: Tensor, sigma: float = 5.0) -> Tensor:
    """Separable Gaussian blur of (N,C,H,W), replicate-padded, radius ``ceil(2 sigma)``.

    The insertion baseline of RISE (Petsiuk et al., 2018). Their code uses a
    Gaussian of sigma 5 truncated to 11 taps (radius 1 sigma, close to a box
    filter); here the kernel reaches 2 sigma (21 taps for sigma 5 on 224-pixel
    inputs), a blur that removes more of the object's texture, so the
    blurred start carries less class evidence.
    """
    if sigma <= 0:
        return x.clone()
    n, c, h, w = x.shape
    radius = max(1, math.ceil(2 * sigma))
    k = gaussian_kernel1d(sigma, radius, x.device).to(x.dtype)
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _baseline(x: Tensor, baseline: str | Tensor, sigma: float) -> tuple[Tensor, str]:
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(x), x.shape), "tensor"
        except RuntimeError:
            raise ExplainzooError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to {tuple(x.shape)}"
            ) from None
    if baseline == "zero":
        return torch.zeros_like(x), baseline
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x), baseline
    if baseline == "blur":
        return blur(x, sigma), baseline
    raise ExplainzooError(f"baseline must be 'zero', 'mean', 'blur' or a tensor, got {baseline!r}")


def _ranks(maps: Tensor) -> Tensor:
    """rank[i, p] = position of pixel p in the descending order of map i (stable: ties by index)."""
    n, hw = maps.shape[0], maps[0].numel()
    order = torch.argsort(-maps.reshape(n, hw), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw, device=order.device).expand(n, hw))
    return rank


def _curve(
    kind: str, backbone: Backbone | nn.Module, x: Tensor, maps: Tensor, target: Any, steps: int,
    baseline: str | Tensor, batch_size: int, blur_sigma: float,
) -> Curve:
    bb = as_backbone(backbone)
    x, maps = check_batch(x, maps)
    steps = check_count(steps, "steps", MAX_STEPS)
    batch_size = check_count(batch_size, "batch_size")
    x = x.detach().float()
    n, _, h, w = x.shape
    base, base_name = _baseline(x, baseline, blur_sigma)
    rank = _ranks(maps.to(x.device))
    counts = torch.tensor([round(k * h * w / steps) for k in range(steps + 1)], device=x.device)
    fractions = counts.float() / (h * w)
    probs = torch.empty(n, steps + 1)
    with acquire(bb.lock, bb.name), preserved_state(bb.model):  # waits at most until an active deadline
        resolved, passes = resolve_metric_target(bb, target, x, batch_size)
        # the (image, step) pairs in one flat list, materialised one chunk at a time
        pairs = [(i, k) for i in range(n) for k in range(steps + 1)]
        for a, b in chunks(len(pairs), batch_size):
            idx = torch.tensor([i for i, _ in pairs[a:b]])
            ks = torch.tensor([k for _, k in pairs[a:b]])
            di, dk = idx.to(x.device), ks.to(x.device)
            with torch.inference_mode():
                changed = (rank[di] < counts[dk][:, None]).view(-1, 1, h, w)
                inp = torch.where(changed, base[di], x[di]) if kind == "deletion" else \
                    torch.where(changed, x[di], base[di])
            scores = resolved.select(di).scores(forward_logits(bb, inp), softmax=True)
            probs[idx, ks] = scores.cpu()
    passes += n * (steps + 1)
    indices = resolved.indices
    targets = indices.clone().cpu() if indices is not None else torch.full((n,), -1, dtype=torch.long)
    auc = torch.trapezoid(probs, fractions.cpu(), dim=1)
    return Curve(kind, fractions.cpu(), probs, auc, targets, base_name, passes, resolved.description)


def deletion(
    backbone: Backbone | nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Any = None,
    steps: int = 20,
    baseline: str | Tensor = "zero",
    batch_size: int = DEFAULT_BATCH_SIZE,
    blur_sigma: float = 5.0,
) -> Curve:
    """The deletion curve (Petsiuk et al., RISE, 2018, arXiv:1806.07421).

    Step ``k`` (0..steps) replaces the ``round(k*H*W/steps)`` highest-ranked
    pixels of the map (all channels; ties broken by pixel index) with the
    baseline; lower AUC is better.

    Args:
        backbone: a :class:`Backbone` or a bare classifier module.
        x: (N,3,H,W) normalised model input.
        maps: (N,H,W) the maps to test (``exp.maps``), higher = more important.
        target: what is followed, as in ``explain`` (a class, a per-image list,
            a :mod:`~explainzoo.explainers.targets` target); None: each image's
            top-1 on ``x``. Pass ``exp.target`` to follow the explained score.
        steps: number of steps (at most :data:`MAX_STEPS`); the curve has steps+1 points.
        baseline: ``"zero"`` (0 in normalised space: the dataset mean colour,
            the default), ``"mean"`` (each image's per-channel mean), ``"blur"``
            (a Gaussian-blurred copy) or a tensor broadcastable to ``x``.
        batch_size: images per forward pass.
        blur_sigma: Gaussian sigma in pixels for ``"blur"``.

    Returns:
        A :class:`Curve`. Forward passes: ``N*(steps+1)`` images, plus ``N`` when
        ``target`` is None.
    """
    return _curve("deletion", backbone, x, maps, target, steps, baseline, batch_size, blur_sigma)


def insertion(
    backbone: Backbone | nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Any = None,
    steps: int = 20,
    baseline: str | Tensor = "blur",
    batch_size: int = DEFAULT_BATCH_SIZE,
    blur_sigma: float = 5.0,
) -> Curve:
    """The insertion curve (Petsiuk et al., RISE, 2018, arXiv:1806.07421).

    Starts from the baseline (default: a Gaussian-blurred copy of the image,
    as in the paper) and reveals the original pixels in the order of the map;
    higher AUC is better. Arguments as :func:`deletion`.

    Returns:
        A :class:`Curve`. Forward passes: ``N*(steps+1)`` images, plus ``N`` when
        ``target`` is None.
    """
    return _curve("insertion", backbone, x, maps, target, steps, baseline, batch_size, blur_sigma)
