"""Shared fixtures: seeded RNGs, real photos, session-cached backbones."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network

#: The contract backbones of the foundation issue and the input size each runs at.
#: CNNs are fully convolutional, so a smaller input keeps the suite fast; the ViT
#: runs at its native size.
CONTRACT_BACKBONES: dict[str, tuple[int, int]] = {
    "vgg11_ref": (64, 64),
    "timm:resnet18": (128, 128),
    "timm:tf_efficientnet_lite0": (128, 128),
    "timm:convnext_atto": (128, 128),
    "timm:vit_tiny_patch16_224": (224, 224),
}

_cache: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def get_backbone(name: str):
    """A session-cached backbone (the EfficientNet-Lite0 with offline ImageNet weights)."""
    from explainzoo.backbones import create_backbone

    if name not in _cache:
        torch.manual_seed(0)
        pretrained = name == "timm:tf_efficientnet_lite0"
        _cache[name] = create_backbone(name, pretrained=pretrained)
    return _cache[name]


@pytest.fixture(scope="session")
def lite0():
    return get_backbone("timm:tf_efficientnet_lite0")


@pytest.fixture(scope="session")
def vgg():
    return get_backbone("vgg11_ref")


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()
