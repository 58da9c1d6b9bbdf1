"""Class activation maps from a layer's activations and gradients.

Every method here is one step of
:class:`~explainzoo.explainers.base.CAMExplainer`: ``weights(A, G, ctx)``
(N,C) for the channel-weight CAMs, ``combine(A, G, ctx)`` (N,h,w) where the
map is no weighted sum of channels. A and G = dS/dA arrive as (N,C,h,w) maps
(token and channels-last layers already rearranged by the backbone); the
template applies ReLU, upsamples bilinearly and scales to [0,1]. The CAMs
whose weights need extra forward passes (Score-CAM, Ablation-CAM) live in
:mod:`explainzoo.explainers.perturbation`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from explainzoo.backbones import ExplainzooError

from .base import CAMExplainer, Context, Option


def _gradients(G: Tensor | None) -> Tensor:
    """G, which the template passes to every CAM with ``needs_gradient``."""
    if G is None:
        raise ExplainzooError("internal: a gradient CAM received no gradients (needs_gradient=False?)")
    return G


class GradCAM(CAMExplainer):
    """Grad-CAM: ReLU(sum_c alpha_c A_c), alpha_c = spatial mean of d score_y / d A_c.

    Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization, ICCV 2017 (https://arxiv.org/abs/1610.02391).
    Upsampled bilinearly to the input and divided by its maximum, as in the notes.
    """

    description = "gradient-weighted class activation map of a layer (default: last)"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 (arXiv:1610.02391)"

    def weights(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        return _gradients(G).mean(dim=(2, 3))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den != 0``, else 0 (never NaN or inf from a zero)."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


class GradCAMPlusPlus(CAMExplainer):
    """Grad-CAM++: pixel-weighted positive gradients as channel weights.

    Chattopadhay et al., Grad-CAM++: Improved Visual Explanations for Deep
    Convolutional Networks, WACV 2018 (https://arxiv.org/abs/1710.11063).

    With g = d S / d A (S the class logit)::

        alpha_c^ij = g_c^ij^2 / (2 g_c^ij^2 + sum_ab A_c^ab g_c^ij^3)
        w_c        = sum_ij alpha_c^ij ReLU(g_c^ij)
        map        = ReLU(sum_c w_c A_c)

    The paper explains Y = exp(S) so that its higher derivatives are powers of
    the first one; its extra factor exp(S) > 0 scales every weight of an image
    alike and disappears in the normalisation, so it is dropped (as in the
    authors' and pytorch-grad-cam's code). A zero or negative denominator
    gives alpha = 0: the derivation assumes non-negative (post-ReLU)
    activations, and on signed ones (a ViT's LayerNorm output) a negative
    sum_ab A_c^ab would otherwise flip every weight and leave a blank map. For
    ReLU activations nothing changes (there a negative denominator needs g < 0,
    which ReLU(g) already zeroes).
    """

    description = "Grad-CAM++: channel weights from pixel-weighted positive gradients"
    paper = "Chattopadhay et al., Grad-CAM++, WACV 2018 (arXiv:1710.11063)"

    def weights(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        G = _gradients(G)
        g2 = G * G
        denom = 2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g2 * G
        alpha = _safe_div(g2, denom.clamp(min=0))
        return (alpha * G.clamp(min=0)).sum(dim=(2, 3))


class XGradCAM(CAMExplainer):
    """XGrad-CAM: gradients averaged with the activations as weights.

    Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs, BMVC 2020 (https://arxiv.org/abs/2008.02312)::

        w_c = sum_ij (A_c^ij / sum_ab A_c^ab) dS/dA_c^ij
        map = ReLU(sum_c w_c A_c)

    A channel whose activations sum to zero gets weight 0.
    """

    description = "XGrad-CAM: activation-weighted average gradient as channel weights"
    paper = "Fu et al., Axiom-based Grad-CAM (XGrad-CAM), BMVC 2020 (arXiv:2008.02312)"

    def weights(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        return _safe_div((A * _gradients(G)).sum(dim=(2, 3)), A.sum(dim=(2, 3)))


class LayerCAM(CAMExplainer):
    """Layer-CAM: each location weighted by its own positive gradient.

    Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization, IEEE TIP 2021 (https://doi.org/10.1109/TIP.2021.3089943,
    http://mmcheng.net/mftp/Papers/21TIP_LayerCAM.pdf)::

        map = ReLU(sum_c ReLU(dS/dA_c) * A_c)

    Works on early layers too (pass ``layer="stage2"``); the paper's optional
    tanh scaling for fusing several layers is not applied.
    """

    description = "Layer-CAM: activations weighted per location by positive gradients"
    paper = "Jiang et al., LayerCAM, IEEE TIP 2021 (doi:10.1109/TIP.2021.3089943)"

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        return (_gradients(G).clamp(min=0) * A).sum(dim=1)


class HiResCAM(CAMExplainer):
    """HiResCAM: the element-wise product of gradients and activations.

    Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks, 2020 (https://arxiv.org/abs/2011.08891)::

        map = sum_c dS/dA_c * A_c

    Unlike Grad-CAM it does not average the gradient over space, so for a
    model ending in global average pooling and a linear layer the map is
    exactly the class score's contribution of each location (CAM). The paper's
    map is signed; like Grad-CAM (and pytorch-grad-cam) we show its positive
    part.
    """

    description = "HiResCAM: sum over channels of gradient x activation, per location"
    paper = "Draelos & Carin, HiResCAM, 2020 (arXiv:2011.08891)"

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        return (_gradients(G) * A).sum(dim=1)


def eigen_projection(A: Tensor, center: bool = False) -> Tensor:
    """Projection of each location's feature vector on the first principal direction.

    A (N,C,h,w) -> (N,h,w) signed. Per image, the (h*w, C) matrix M (centred
    over locations when ``center``) is decomposed as U S V^T and the map is
    M v_1. The singular vector's sign is arbitrary; it is fixed so that the map
    correlates non-negatively with the mean activation over channels.
    Computed in float64; an all-zero A gives zeros.
    """
    n, c, h, w = A.shape
    out = []
    for a in A.double():
        m = a.reshape(c, h * w).T  # (hw, C)
        if center:
            m = m - m.mean(dim=0, keepdim=True)
        if not torch.any(m != 0):
            out.append(torch.zeros(h * w, dtype=m.dtype, device=m.device))
            continue
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        proj = m @ vh[0]
        ref = a.mean(dim=0).reshape(-1)
        corr = ((proj - proj.mean()) * (ref - ref.mean())).sum()
        if corr == 0:  # no correlation to orient by: use the total instead
            corr = proj.sum() * ref.sum()
        out.append(-proj if corr < 0 else proj)
    return torch.stack(out).reshape(n, h, w).to(A.dtype)


class EigenCAM(CAMExplainer):
    """Eigen-CAM: the first principal component of the layer's activations.

    Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal
    Components, IJCNN 2020 (https://arxiv.org/abs/2008.00299). With A reshaped
    to M (h*w locations x C channels) and M = U S V^T::

        map = ReLU(M v_1)

    Gradient- and class-free: the map is the same for every target (targets
    and scores are still reported). Deviations: the sign of v_1 is fixed so
    that the map correlates positively with the channel-mean activation (the
    SVD's sign is arbitrary); ``center=True`` subtracts the mean feature vector
    first (as pytorch-grad-cam does; the paper does not).
    """

    description = "Eigen-CAM: first principal component of a layer's activations (class-agnostic)"
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020 (arXiv:2008.00299)"
    needs_gradient = False
    options = {
        "center": Option(False, "subtract the mean feature vector before the SVD (pytorch-grad-cam style)"),
    }

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        return eigen_projection(A, center=self.config["center"])
