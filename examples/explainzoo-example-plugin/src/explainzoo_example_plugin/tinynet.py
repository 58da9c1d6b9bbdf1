"""``tinynet:<width>``: tiny random-init CNNs, small and offline.

A :class:`~explainzoo.backbones.BackboneFamily` answers every name with its
prefix: ``tinynet:8`` is a three-stage residual CNN whose first stage has 8
channels (64x64 inputs, 10 classes, random init).
The backbone is built through :func:`explainzoo.backbones.build_backbone`, so
checkpoints load the same way as for every other family; there are no
published weights (``pretrained=True`` is an error saying so).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from explainzoo.backbones import (
    Backbone,
    BackboneFamily,
    ExplainzooError,
    LayerHints,
    Preprocessing,
    UnknownNameError,
    build_backbone,
)

WIDTHS = (4, 8, 16, 32, 64)
NUM_CLASSES = 10
INPUT_SIZE = (64, 64)


class ResidualUnit(nn.Module):
    """``ReLU(BN(conv(x)) + x)``: a basic residual unit; its ``bn`` output is signed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)) + x)


def _down(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyNet(nn.Module):
    """A stem conv, three stages (a strided conv and a residual unit each), pool, linear."""

    def __init__(self, width: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        chans = (width, 2 * width, 4 * width)
        self.down1, self.down2, self.down3 = (_down(c_in, c, s) for c_in, c, s in
                                               zip((width, *chans[:2]), chans, (1, 2, 2)))
        self.stage1, self.stage2, self.stage3 = (ResidualUnit(c) for c in chans)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.stage1(self.down1(x))
        x = self.stage3(self.down3(self.stage2(self.down2(x))))
        return self.fc(self.pool(x).flatten(1))


class TinyNetFamily(BackboneFamily):
    """``tinynet:<width>`` for the widths in :data:`WIDTHS`."""

    name = "tinynet"

    def list_names(self, pattern: str = "*") -> list[str]:
        """The model names (widths) matching a shell wildcard."""
        return [str(w) for w in WIDTHS if fnmatch.fnmatchcase(str(w), pattern or "*")]

    def create(self, model_name: str, pretrained: bool = False,
               checkpoint: str | Path | None = None, **kwargs: Any) -> Backbone:
        """Build ``tinynet:<model_name>``.

        Args:
            model_name: a width from :data:`WIDTHS`, e.g. ``"8"``.
            pretrained: there are no published weights: True is an error.
            checkpoint: a state-dict file of the same width.
            **kwargs: ``num_classes`` (default 10).

        Raises:
            UnknownNameError: not a known width.
            ExplainzooError: an unknown keyword argument.
            WeightsUnavailableError: ``pretrained=True`` (there are no published weights).
        """
        if model_name not in self.list_names():
            raise UnknownNameError(f"unknown tinynet model {model_name!r}; widths: {', '.join(self.list_names())}")
        width, classes = int(model_name), int(kwargs.pop("num_classes", NUM_CLASSES))
        if kwargs:
            raise ExplainzooError(f"unknown tinynet option(s) {sorted(kwargs)}; the only one is num_classes")
        return build_backbone(
            f"tinynet:{model_name}",
            lambda: TinyNet(width, classes),
            preprocessing=Preprocessing(input_size=INPUT_SIZE, crop_pct=1.0),
            labels=[f"class_{i}" for i in range(classes)],
            pretrained=pretrained,
            checkpoint=checkpoint,
            layer_hints=self.hints_for,
        )

    def hints_for(self, model: nn.Module) -> LayerHints | None:
        """Stem conv and stage ends of a tinynet model; None for other models."""
        if not isinstance(model, TinyNet):
            return None
        return LayerHints(first_conv="conv1", stage_paths=("stage1", "stage2", "stage3"), last=("stage3",))
