"""The reference VGG11 of the study notes, with the notes' module names.

``VGG11Classifier(backbone=VGG11Backbone, gap, fc_out)``: eight 3x3 conv + BN
layers with four max-pools, so ``backbone.bn5_2`` is 512x14x14 for a 224 input,
then global average pooling and one linear layer. The conv/BN weights map
one-to-one from torchvision's or timm's ``vgg11_bn`` (:func:`from_vgg11_bn`);
the head is the user's and comes from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import Backbone
from .builder import build_backbone
from .errors import WeightsUnavailableError
from .labels import default_labels
from .preprocess import Preprocessing
from .weights import load_state_dict_checked

# (conv name, bn name, channels out, max-pool after)
_LAYERS = (
    ("conv1", "bn1", 64, "pool1"),
    ("conv2", "bn2", 128, "pool2"),
    ("conv3_1", "bn3_1", 256, None),
    ("conv3_2", "bn3_2", 256, "pool3"),
    ("conv4_1", "bn4_1", 512, None),
    ("conv4_2", "bn4_2", 512, "pool4"),
    ("conv5_1", "bn5_1", 512, None),
    ("conv5_2", "bn5_2", 512, None),
)

ALIASES = {
    "conv1": "backbone.conv1",
    "last": "backbone.bn5_2",
    "stage1": "backbone.bn1",
    "stage2": "backbone.bn2",
    "stage3": "backbone.bn3_2",
    "stage4": "backbone.bn4_2",
    "stage5": "backbone.bn5_2",
}


class VGG11Backbone(nn.Module):
    """VGG11 feature extractor with the notes' names (ReLU applied in place)."""

    def __init__(self) -> None:
        super().__init__()
        cin = 3
        for conv, bn, cout, pool in _LAYERS:
            self.add_module(conv, nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            self.add_module(bn, nn.BatchNorm2d(cout))
            if pool:
                self.add_module(pool, nn.MaxPool2d(kernel_size=2, stride=2))
            cin = cout

    def forward(self, x: Tensor) -> Tensor:
        for conv, bn, _, pool in _LAYERS:
            x = F.relu(getattr(self, bn)(getattr(self, conv)(x)), inplace=True)
            if pool:
                x = getattr(self, pool)(x)
        return x


class VGG11Classifier(nn.Module):
    """``backbone`` -> global average pool ``gap`` -> linear ``fc_out``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = VGG11Backbone()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc_out = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.gap(self.backbone(x)).flatten(1))


def from_vgg11_bn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a torchvision/timm ``vgg11_bn`` state dict onto ``VGG11Backbone`` keys.

    ``features.{i}`` conv and BN entries are taken in order (indices 0, 1, 4,
    5, 8, 9, ...); the classifier is dropped (it does not fit the GAP head).
    Returned keys are prefixed with ``backbone.``.
    """
    convs = sorted(
        {int(k.split(".")[1]) for k, v in state_dict.items() if k.startswith("features.") and v.ndim == 4}
    )
    if len(convs) != len(_LAYERS):
        raise WeightsUnavailableError(
            f"expected a vgg11_bn state dict with {len(_LAYERS)} convolutions, found {len(convs)}"
        )
    out: dict[str, Tensor] = {}
    for (conv, bn, _, _), idx in zip(_LAYERS, convs):
        for src_idx, dst in ((idx, conv), (idx + 1, bn)):
            prefix = f"features.{src_idx}."
            found = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if not found:
                raise WeightsUnavailableError(f"vgg11_bn state dict has no {prefix}* entries")
            out.update({f"backbone.{dst}.{k}": v for k, v in found.items()})
    return out


NO_WEIGHTS = (
    "vgg11_ref has no published weights: its head is yours. Pass checkpoint=PATH "
    "(a vgg11_ref state dict, or a vgg11_bn one for the conv/bn part), or "
    "pretrained=False for random init."
)


def create_vgg11_ref(
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    num_classes: int = 1000,
    labels: list[str] | None = None,
) -> Backbone:
    """The reference VGG11 as a :class:`Backbone`, through the builder.

    Args:
        pretrained: there are no published weights for this head; asking for
            them without a checkpoint is an error that says so.
        checkpoint: a ``vgg11_ref`` state dict (all weights), or a
            ``vgg11_bn`` one (conv/BN weights only; the head stays random and
            ``weights`` says so).
        num_classes: size of ``fc_out``.
        labels: class names; default ImageNet's for 1000 classes.
    """
    return build_backbone(
        "vgg11_ref",
        lambda: VGG11Classifier(num_classes),
        preprocessing=Preprocessing(),
        labels=labels or default_labels(num_classes),
        pretrained=pretrained,
        checkpoint=checkpoint,
        aliases=ALIASES,
        fit_checkpoint=fit_checkpoint,
        no_weights=NO_WEIGHTS,
    )


def fit_checkpoint(model: nn.Module, sd: Mapping[str, Tensor], source: str) -> str:
    """Load a ``vgg11_ref`` state dict, or a ``vgg11_bn`` one onto the conv/BN part."""
    if any(k.startswith("features.") for k in sd):
        mapped = from_vgg11_bn(sd)
        load_state_dict_checked(model.backbone, _strip(mapped, "backbone."), source)
        return f"{source} (conv/bn from vgg11_bn; head random init)"
    load_state_dict_checked(model, sd, source)
    return source


def _strip(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
