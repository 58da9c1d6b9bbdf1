"""Shared mechanics of methods that run the model on many modified inputs.

Score-CAM, Ablation-CAM, Occlusion and RISE score hundreds of perturbed copies
of one image; SmoothGrad and Integrated Gradients take gradients of many noisy
or interpolated copies. What they share lives here, once:

* :func:`chunks` splits K copies into batches of at most ``batch_size``, so
  memory stays bounded whatever K is (masks are built per chunk, never all at
  once);
* :func:`forward_logits` runs the model under ``torch.inference_mode`` (no
  autograd bookkeeping at all) and checks it returned (N, classes) logits;
* :func:`masked_scores` blends an image with a fill value through a batch of
  masks and gathers the target's score of every copy;
* :func:`minmax01`, :func:`fill_value`, :func:`generator`: mask normalisation,
  the "removed pixel" value in model-input space, and seeded per-call RNGs.

Randomised methods draw from a fresh ``torch.Generator`` seeded with the
``seed`` option for every image, so ``explain(batch)[i]`` equals
``explain(x_i)`` exactly and two calls give the same map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError

from .base import Option

#: Where a perturbation puts "nothing": values in model-input (normalised) space.
FILL_CHOICES = ("mean", "black")


def fill_option(default: str = "mean") -> Option:
    """The shared ``baseline`` option: what removed pixels are replaced with."""
    return Option(
        default,
        "value of removed pixels: 'mean' (zeros after normalisation: the dataset's mean colour) "
        "or 'black' (an all-black image through the backbone's normalisation)",
        choices=FILL_CHOICES,
    )


def batch_option(default: int = 8) -> Option:
    """The shared ``batch_size`` option: copies per forward pass.

    The default 8 is the fastest per image on a 2-core CPU (EfficientNet-Lite0:
    batches of 4-8 beat both 1 and 16+, which spill the caches); raise it on a GPU.
    """
    return Option(default, "perturbed copies per forward pass (bounds memory)", low=1, high=4096)


def seed_option() -> Option:
    """The shared ``seed`` option of the randomised methods."""
    return Option(0, "seed of the random draws (the same for every image of a batch)", low=0, high=2**63 - 1)


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``size``."""
    if size < 1:
        raise ExplainzooError(f"batch_size must be >= 1, got {size}")
    for start in range(0, total, size):
        yield start, min(start + size, total)


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator for one image: draws do not depend on the batch."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def forward_logits(model: nn.Module, inputs: Tensor, rows: int | None = None) -> Tensor:
    """``model(inputs)`` under ``torch.inference_mode``, as an ordinary tensor.

    Args:
        rows: the number of logit rows expected (default: one per input; a
            hook that substitutes a layer's output may change it).

    Raises:
        ExplainzooError: the model did not return (rows, classes) logits.
    """
    with torch.inference_mode():
        logits = model(inputs)
    expected = inputs.shape[0] if rows is None else rows
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != expected:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ExplainzooError(f"the model must return (N, num_classes) logits, got {got}")
    return logits.clone()  # outside inference mode: a normal tensor


def target_scores(logits: Tensor, target: int, softmax: bool = False) -> Tensor:
    """(K,) scores of one class for K copies: logits or softmax probabilities."""
    if softmax:
        return logits.float().softmax(dim=1)[:, target]
    return logits[:, target].float()


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
    model: nn.Module,
    x: Tensor,
    masks: Tensor,
    fill: Tensor,
    target: int,
    softmax: bool = False,
) -> Tensor:
    """(K,) target scores of one image (3,H,W) seen through K masks (K,H,W)."""
    with torch.inference_mode():
        inputs = blend(x, masks, fill)
    return target_scores(forward_logits(model, inputs), target, softmax)


def chunked_masked_scores(
    model: nn.Module,
    x: Tensor,
    make_masks: Callable[[int, int], Tensor],
    count: int,
    fill: Tensor,
    target: int,
    batch_size: int,
    softmax: bool = False,
) -> Tensor:
    """(count,) target scores of ``x`` through masks built chunk by chunk.

    ``make_masks(start, stop)`` returns the (stop-start, H, W) masks of that
    chunk, so at most ``batch_size`` masks and copies exist at a time.
    """
    out = [
        masked_scores(model, x, make_masks(a, b), fill, target, softmax)
        for a, b in chunks(count, batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, device=x.device)


def minmax01(maps: Tensor) -> Tensor:
    """Each (h,w) map of (K,h,w) min-max scaled to [0,1]; a constant map gives zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1) - lo)
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - lo) / safe, torch.zeros_like(maps))
