"""Shared fixtures: seeded RNGs, real photos, session-cached backbones."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
# OpenMP threads that spin while waiting starve the other threads of this 2-core
# machine (the demo's server threads, the thread-safety tests): a ResNet-18 forward
# went from 0.07 s to 1.3 s under load. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A local Ray binds its servers to the machine's address unless this is "0" (then to
# 127.0.0.1): tests talk to loopback only. Read by Ray at import, so set it here.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

#: The contract backbones of the foundation issue and the input size each runs at.
#: Smaller inputs than 224 keep the suite fast: the CNNs are fully convolutional
#: and the ViT is built with timm's ``dynamic_img_size`` (its native size is
#: covered by tests/test_backbones.py and the transformer tests).
CONTRACT_BACKBONES: dict[str, tuple[int, int]] = {
    "vgg11_ref": (64, 64),
    "timm:resnet18": (128, 128),
    "timm:tf_efficientnet_lite0": (128, 128),
    "timm:convnext_atto": (128, 128),
    "timm:vit_tiny_patch16_224": (112, 112),
}
CONTRACT_KWARGS: dict[str, dict] = {"timm:vit_tiny_patch16_224": {"dynamic_img_size": True}}

_cache: dict[tuple, object] = {}


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def get_backbone(name: str, **kwargs):
    """A session-cached backbone (the EfficientNet-Lite0 with offline ImageNet weights)."""
    from explainzoo.backbones import create_backbone

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _cache:
        torch.manual_seed(0)
        pretrained = name == "timm:tf_efficientnet_lite0"
        _cache[key] = create_backbone(name, pretrained=pretrained, **kwargs)
    return _cache[key]


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
