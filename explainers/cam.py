"""Class activation maps from a layer's activations and gradients."""

from __future__ import annotations

from torch import Tensor

from .base import CAMExplainer, Context


class GradCAM(CAMExplainer):
    """Grad-CAM: ReLU(sum_c alpha_c A_c), alpha_c = spatial mean of d score_y / d A_c.

    Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization, ICCV 2017 (https://arxiv.org/abs/1610.02391).
    Upsampled bilinearly to the input and divided by its maximum, as in the notes.
    """

    description = "gradient-weighted class activation map of a layer (default: last)"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 (arXiv:1610.02391)"

    def combine(self, A: Tensor, G: Tensor | None, ctx: Context) -> Tensor:
        assert G is not None
        alpha = G.mean(dim=(2, 3), keepdim=True)
        return (alpha * A).sum(dim=1)
