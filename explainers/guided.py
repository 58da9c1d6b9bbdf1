"""Guided Backprop and Guided Grad-CAM, without touching the caller's model.

Guided Backprop changes the backward pass of every ReLU: only positive
gradients flow back through it. Libraries usually swap the model's ReLU
modules for guided ones; here nothing in the model changes. For one call, a
:class:`~torch.overrides.TorchFunctionMode` (thread-local, so a concurrent
explanation of another model is not affected) intercepts the activation
functions the forward pass calls and passes their output through
:class:`_GuidedGate`, the identity whose backward keeps only the positive part
of the gradient. The mode is removed in ``finally``.

What it covers: every call, during the forward pass, of the functions in
:data:`GUIDED_FUNCTIONS`: ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (and
their in-place forms), ``F.relu6`` / ``F.hardtanh``, ``F.gelu``, ``F.silu``,
``F.elu``, ``F.leaky_relu``, ``F.hardswish``, ``F.mish``, ``F.selu``,
``F.celu`` and ``F.softplus``, whether a module (``nn.ReLU``, ``nn.GELU``,
timm's activation layers, ...) or the model's own code (``F.relu(x,
inplace=True)`` in ``vgg11_ref``) calls them. Not covered: activations
written as arithmetic (``x * x.sigmoid()``, ``x.clamp(min=0)``), and an
in-place activation whose return value the model ignores.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .base import AttributionExplainer, Context
from .cam import GradCAM
from .context import InputGradients
from .mechanics import upsample
from .targets import Target

#: Activation functions whose backward is guided (see the module docstring).
GUIDED_FUNCTIONS: frozenset[Any] = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_,
    F.relu6, F.hardtanh, F.hardtanh_,
    F.gelu, F.silu, F.elu, F.elu_, F.leaky_relu, F.leaky_relu_,
    F.hardswish, F.mish, F.selu, F.celu, F.softplus,
})


class _GuidedGate(torch.autograd.Function):
    """Identity forward; backward passes only the positive part of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()  # a new tensor: later in-place ops cannot alias the input

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class GuidedMode(TorchFunctionMode):
    """While active (this thread only), activations get a guided backward.

    The gate sits after the activation f, so backward gives
    ``f'(x) * ReLU(grad_out)``: exactly Springenberg et al.'s rule
    ``(x > 0) * (grad_out > 0) * grad_out`` for ReLU.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in GUIDED_FUNCTIONS and isinstance(out, Tensor) and out.requires_grad:
            return _GuidedGate.apply(out)
        return out


def guided_gradients(ctx: Context, x: Tensor, target: Target | None = None) -> InputGradients:
    """Guided d score / d x (N,3,H,W) for ``x`` (see :meth:`Context.input_gradients`)."""
    with GuidedMode():
        return ctx.input_gradients(x, target)


class GuidedBackprop(AttributionExplainer):
    """Guided Backprop: the input gradient with negative gradients stopped at every ReLU.

    Springenberg et al., Striving for Simplicity: The All Convolutional Net,
    ICLR-W 2015 (https://arxiv.org/abs/1412.6806). At each ReLU with input x
    the backward signal R becomes ``(x > 0) * (R > 0) * R``; other activations
    (GELU, SiLU, ...) get ``f'(x) * ReLU(R)``. The map is ``max_c |R_input|``
    over colour channels. Implemented with a per-call function override, not by
    replacing modules: see :mod:`explainzoo.explainers.guided` for what it covers.
    """

    description = "Guided Backprop: input gradient passing only positive signals through ReLUs"
    paper = "Springenberg et al., Striving for Simplicity, ICLR-W 2015 (arXiv:1412.6806)"

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        grad = guided_gradients(ctx, ctx.require_x()).grad  # the guided forward equals the clean one
        clean = ctx.clean()
        return grad.abs().amax(dim=1), clean.targets, clean.scores


class GuidedGradCAM(AttributionExplainer):
    """Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM of a layer.

    Selvaraju et al., Grad-CAM, ICCV 2017 (https://arxiv.org/abs/1610.02391),
    Sec. 3.1: the point-wise product of the guided backpropagation map and the
    Grad-CAM map (bilinearly upsampled to the input). The paper multiplies the
    3-channel guided gradient; we multiply its ``max_c |.|`` (the
    ``guided_backprop`` map) so the result is one channel. Both use the same
    target: the one Grad-CAM resolved.
    """

    description = "Guided Grad-CAM: Guided Backprop map times the upsampled Grad-CAM"
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 (arXiv:1610.02391)"
    uses_layer = True
    base_passes = 2  # the Grad-CAM pass and the guided one

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        cam = upsample(GradCAM().cam(ctx), ctx.input_hw)  # its capture pass is the clean pass
        clean = ctx.clean()
        grad = guided_gradients(ctx, ctx.require_x(), clean.target).grad
        return grad.abs().amax(dim=1).float() * cam, clean.targets, clean.scores
