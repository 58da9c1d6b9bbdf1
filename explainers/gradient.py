"""Input-gradient methods."""

from __future__ import annotations

from torch import Tensor

from .base import AttributionExplainer, Context


class Saliency(AttributionExplainer):
    """Vanilla gradient saliency: (d score_y / d image)^2, max over colour channels.

    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, 2013
    (https://arxiv.org/abs/1312.6034). The notes square the gradient (the paper
    takes its absolute value: same ranking, sharper contrast); the map is then
    divided by its maximum.
    """

    description = "squared input gradient of the class score, max over colour channels"
    paper = "Simonyan et al., Deep Inside Convolutional Networks, 2013 (arXiv:1312.6034)"

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        grad, targets, scores = ctx.input_gradients(ctx.require_x())
        return (grad**2).amax(dim=1), targets, scores
