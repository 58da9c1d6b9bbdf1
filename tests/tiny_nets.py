"""Tiny hand-weighted networks for golden-value tests of the attribution family.

``TinyNet``: conv1 (3->4, 3x3, pad 1) -> act1 (ReLU) -> conv2 (4->3, 1x1) ->
act2 (ReLU) -> global average pool -> fc (3->3), on 8x8 inputs. Every weight
is set by hand (small integer patterns / 10), and two channels of ``act1`` are
special on purpose: channel 2 is dead (weights 0, bias -1: all zeros) and
channel 3 is constant (weights 0, bias 0.5). The second ReLU makes the
gradient at ``act1`` vary over space, so the CAM variants differ.

The helpers below recompute the pieces the tests need by hand, without any
explainzoo code: the head above ``act1``, ``A`` and ``dS/dA``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import Backbone, Preprocessing

LABELS = ["ant", "bee", "cat"]


def _pattern(shape: tuple[int, ...], mod: int, shift: int, scale: float = 0.1) -> Tensor:
    n = 1
    for s in shape:
        n *= s
    return ((torch.arange(n) * 7 % mod) - shift).float().reshape(shape) * scale


class TinyNet(nn.Module):
    """conv1 -> act1 -> conv2 -> act2 -> pool -> fc, hand-weighted."""

    def __init__(self, linear: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.Identity() if linear else nn.ReLU()
        self.conv2 = nn.Conv2d(4, 3, 1)
        self.act2 = nn.Identity() if linear else nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(_pattern((4, 3, 3, 3), 11, 5))
            self.conv1.bias.copy_(torch.tensor([0.1, -0.2, -1.0, 0.5]))
            self.conv1.weight[2:] = 0  # channel 2 dead, channel 3 constant 0.5
            self.conv2.weight.copy_(torch.tensor([[1.0, -0.5, 0.3, 0.2],
                                                  [-0.4, 1.2, 0.0, -0.3],
                                                  [0.6, 0.7, -0.2, 0.1]]).view(3, 4, 1, 1))
            self.conv2.bias.copy_(torch.tensor([0.05, -0.1, 0.2]))
            self.fc.weight.copy_(torch.tensor([[1.5, -1.0, 0.5],
                                               [-0.5, 2.0, 1.0],
                                               [0.8, 0.3, -1.2]]))
            self.fc.bias.copy_(torch.tensor([0.1, 0.0, -0.1]))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act1(self.conv1(x)))

    def head(self, a: Tensor) -> Tensor:
        """Everything above ``act1``."""
        return self.fc(self.pool(self.act2(self.conv2(a))).flatten(1))


def tiny_backbone(linear: bool = False, name: str = "tiny") -> Backbone:
    """TinyNet as a Backbone on 8x8 inputs; ``last`` is ``act1``."""
    model = TinyNet(linear=linear).eval()
    return Backbone(name, model, Preprocessing(input_size=(8, 8)), labels=list(LABELS),
                    aliases={"last": "act1", "conv1": "conv1"})


def tiny_input(n: int = 1, seed: int = 3) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g)


def _double(model: TinyNet) -> TinyNet:
    return copy.deepcopy(model).double()


def act_and_grad(model: TinyNet, x: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(A = act1 output, dS/dA, targets) in float64, by hand (S: the target logit)."""
    m = _double(model)
    z = F.conv2d(x.double(), m.conv1.weight, m.conv1.bias, padding=1)
    a = (F.relu(z) if isinstance(m.act1, nn.ReLU) else z).detach().requires_grad_(True)
    logits = m.head(a)
    if targets is None:
        targets = logits.argmax(1)
    (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), a)
    return a.detach(), g, targets


def head_logits(model: TinyNet, a: Tensor) -> Tensor:
    """Logits from act1 activations, float64."""
    with torch.no_grad():
        return _double(model).head(a.double())


def logits64(model: nn.Module, x: Tensor) -> Tensor:
    """The model's logits in float64 (a double copy: the model is not touched)."""
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double())


def one_torch_thread() -> Iterator[None]:
    """Run a test module with one torch thread (for a module-scoped autouse fixture).

    On this shared 2-core machine OpenMP's spin-waiting makes 2-thread torch
    runs up to 20x slower whenever other processes hold the cores (ResNet-18
    at 128 px: 0.07 s -> 1.3 s per forward); these tests check values, not
    speed, so they run single-threaded and the previous count is restored.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
