"""Grad-CAM element-wise: the product of gradients and activations, ReLU'd per element."""

from __future__ import annotations

from torch import Tensor

from explainzoo.explainers import CAMExplainer, Context


class GradCAMElementWise(CAMExplainer):
    """Grad-CAM element-wise: ``ReLU(sum_c ReLU(G_c * A_c))``.

    As ``GradCAMElementWise`` of pytorch-grad-cam (Gildenblat and contributors,
    https://github.com/jacobgil/pytorch-grad-cam,
    ``pytorch_grad_cam/grad_cam_elementwise.py``): with A the layer's
    activations and G = dS/dA the gradients of the class score, every
    element's contribution G * A is clipped at zero before the sum over
    channels, so a location is never lowered by channels that argue against
    the class. The outer ReLU, the bilinear upsampling and the scaling to
    [0,1] are the template's.

    Compared with explainzoo's built-ins: HiResCAM sums G * A unclipped;
    Layer-CAM sums ReLU(G) * A. On post-ReLU activations (A >= 0) element-wise
    and Layer-CAM coincide; they differ on signed activations (BatchNorm or
    LayerNorm outputs, a ViT's tokens), where a negative A with a negative G
    counts for the class here.

    The map is not a weighted sum of channels, so the class implements the
    template's ``combine`` step instead of ``weights``.
    """

    description = "Grad-CAM element-wise: sum over channels of ReLU(gradient x activation)"
    paper = ("Gildenblat et al., pytorch-grad-cam, GradCAMElementWise, 2021 "
             "(https://github.com/jacobgil/pytorch-grad-cam)")

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        """(N,C,h,w) activations and gradients -> (N,h,w) map."""
        assert G is not None  # needs_gradient is True (the default)
        return (G * A).clamp(min=0).sum(dim=1)
