"""Inputs and the reference passes every method is measured against.

F = a plain forward under ``inference_mode``; F+B = forward + gradient of the
target scores to the input; S*F+B = S such passes, batched as a sampling
method batches them (its ideal cost).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from . import rivals as R

_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field",
           "immunohistochemistry", "cat", "colorwheel", "camera", "coins")


def example_images(n: int) -> list[Any]:
    """``n`` real photos from scikit-image (seeded noise images where it is missing)."""
    import numpy as np

    imgs: list[Any] = []
    with contextlib.suppress(ImportError):
        from skimage import data

        for name in _PHOTOS:
            if len(imgs) == n:
                break
            try:
                a = getattr(data, name)()
            except Exception:  # noqa: BLE001 - some need a download: skip them
                continue
            if a.ndim == 2:
                a = np.stack([a] * 3, axis=-1)
            imgs.append(a[..., :3])
    rng = np.random.default_rng(0)
    while len(imgs) < n:
        imgs.append(rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8))
    return imgs


def make_batch(bb: Any, n: int, device: torch.device) -> Tensor:
    """``n`` example photos through ``bb``'s preprocessing, on ``device``."""
    from PIL import Image

    xs = [bb.preprocess(Image.fromarray(a)) for a in example_images(n)]
    return torch.cat(xs).to(device)


def forward_impl(model: nn.Module, x: Tensor) -> R.Impl:
    """F: one forward of ``x`` under ``inference_mode``."""
    def call() -> Tensor:
        with torch.inference_mode():
            return model(x)

    return R.Impl("F", "forward under inference_mode", call)


def forward_backward_impl(model: nn.Module, x: Tensor, targets: Tensor,
                          chunk: int | None = None, label: str = "F+B") -> R.Impl:
    """Forward + gradient of the target scores to the input, ``chunk`` images per pass."""
    def call() -> Tensor:
        grads = []
        step = chunk or x.shape[0]
        with torch.enable_grad():
            for i in range(0, x.shape[0], step):
                leaf = x[i : i + step].detach().requires_grad_(True)
                logits = model(leaf)
                score = logits.gather(1, targets[i : i + step, None]).sum()
                (g,) = torch.autograd.grad(score, leaf)
                grads.append(g)
        return torch.cat(grads)

    return R.Impl(label, "forward + autograd.grad to the input", call)


def repeated_fb_impl(model: nn.Module, x: Tensor, targets: Tensor, samples: int,
                     chunk: int | None, label: str) -> R.Impl:
    """The ideal cost of a samples-based gradient method: samples x F+B, batched."""
    n = x.shape[0]
    big = x.repeat_interleave(samples, dim=0)
    big = big + 0.1 * torch.randn_like(big)
    tg = targets.repeat_interleave(samples)
    per_pass = chunk or min(n * samples, 64)
    inner = forward_backward_impl(model, big, tg, chunk=per_pass, label=label)
    return R.Impl(label, f"{samples} x F+B on {n * samples} inputs, {per_pass} per pass", inner.call)
