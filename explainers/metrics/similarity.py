"""Similarity of two maps: Spearman rank correlation and SSIM (tensors in, numbers out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from explainzoo.backbones import ExplainzooError

__all__ = ["gaussian_kernel1d", "spearman", "ssim"]


def gaussian_kernel1d(sigma: float, radius: int, device: torch.device) -> Tensor:
    """A normalised 1-D Gaussian of ``2 radius + 1`` taps."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _avg_ranks(v: Tensor) -> Tensor:
    """1-D ranks with ties given their average rank (as scipy.stats.rankdata)."""
    _, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2  # 1-based average rank of each group
    return avg[inverse]


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per image of two (N,H,W) maps -> (N,).

    Ties get their average rank. A constant map has no ranking: its
    correlation is defined as 0 (never NaN).
    """
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.shape != b.shape:
        raise ExplainzooError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    out = torch.zeros(a.shape[0])
    for i in range(a.shape[0]):
        ra = _avg_ranks(a[i].flatten().float().cpu())
        rb = _avg_ranks(b[i].flatten().float().cpu())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        den = (ra.square().sum() * rb.square().sum()).sqrt()
        out[i] = float((ra * rb).sum() / den) if den > 0 else 0.0
    return out


def ssim(a: Tensor, b: Tensor, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image of two (N,H,W) maps -> (N,).

    Wang et al., Image Quality Assessment: from Error Visibility to Structural
    Similarity, IEEE TIP 2004: a Gaussian window (sigma 1.5, radius
    ``int(3.5 sigma + 0.5)``), K1=0.01, K2=0.03, population covariances, the
    mean over the positions where the window fits (matches
    ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)``). Maps smaller than the
    window fall back to one global window.
    """
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.shape != b.shape:
        raise ExplainzooError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    x = a.detach().double()[:, None]
    y = b.detach().double()[:, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        mx, my = x.mean(dim=(2, 3)), y.mean(dim=(2, 3))
        vx = (x - mx[..., None, None]).square().mean(dim=(2, 3))
        vy = (y - my[..., None, None]).square().mean(dim=(2, 3))
        cxy = ((x - mx[..., None, None]) * (y - my[..., None, None])).mean(dim=(2, 3))
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        return s[:, 0].float()
    k = gaussian_kernel1d(sigma, radius, x.device).double()

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float()
