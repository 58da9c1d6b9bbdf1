"""``torchvision:<name>``: torchvision's classification and segmentation models.

The :class:`TorchvisionFamily` answers every name
``torchvision.models.list_models(module=torchvision.models)`` lists (ResNet,
MobileNet, EfficientNet, ConvNeXt, ViT, Swin, ...) and those of
``torchvision.models.segmentation`` (DeepLabV3, FCN, LR-ASPP). What it takes
from torchvision:

- preprocessing from the DEFAULT weights' ``transforms()`` (resize, crop,
  mean, std, interpolation), also for a random-init model, so its input is the
  one the published weights expect;
- labels from the weights' ``meta["categories"]`` (ImageNet, or the VOC
  classes of the segmentation models);
- layer hints from the model's structure: ``layer1..4`` for ResNets,
  otherwise the stride steps of its feature trunk (``features``, ``layers``,
  ``trunk_output``, ``blocks``, a segmentation model's ``backbone``), the
  patch tokens of a ViT, the channels-last maps of a Swin; every hint is
  checked on the probe's forward pass;
- weights: torchvision's own, read from the torch hub cache
  (``torch.hub.get_dir()/checkpoints``) with ``weights_only=True``;
  downloaded there when missing unless ``HF_HUB_OFFLINE`` /
  ``EXPLAINZOO_OFFLINE`` is set. Random init (``pretrained=False``) builds
  with ``weights_backbone=None`` and ``aux_loss=False``: no download is tried.

Segmentation models return ``{"out": (N,K,H,W), "aux": ...}``; their backbone
declares ``output_key="out"`` and ``kind="segmentation"``, so targets score
the dense map.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tempfile
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbone import Backbone
from .builder import Hub, build_backbone
from .errors import ExplainzooError, WeightsUnavailableError, unknown
from .family import BackboneFamily
from .labels import default_labels
from .layers import _NOT_FEATURES, LayerHints
from .preprocess import Preprocessing

HUB_HINT = (
    "Put the file in the torch hub cache (torch.hub.get_dir()/checkpoints), pass checkpoint=PATH, "
    "or use pretrained=False for random init."
)
#: Seconds to wait on the download server before giving up.
DOWNLOAD_TIMEOUT_S = 30.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "EXPLAINZOO_OFFLINE")
_TRUNKS = ("features", "layers", "trunk_output", "blocks")
_patch_lock = threading.Lock()


def _models():
    import torchvision.models as models
    import torchvision.models.segmentation  # noqa: F401 - registers the segmentation builders

    return models


def classification_names() -> list[str]:
    """torchvision's classification model names."""
    models = _models()
    return list(models.list_models(module=models))


def segmentation_names() -> list[str]:
    """torchvision's semantic segmentation model names."""
    models = _models()
    return list(models.list_models(module=models.segmentation))


class TorchvisionFamily(BackboneFamily):
    """torchvision's classification and segmentation models, as ``torchvision:<model>``."""

    name = "torchvision"

    def list_names(self, pattern: str = "*") -> list[str]:
        """Model names matching a wildcard (without the ``torchvision:`` prefix)."""
        names = sorted(classification_names() + segmentation_names())
        return [n for n in names if fnmatch.fnmatchcase(n, pattern or "*")]

    def create(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint: str | Path | None = None,
        **kwargs: Any,
    ) -> Backbone:
        """Build ``torchvision:<model_name>`` through the builder.

        Args:
            model_name: a classification or segmentation model name.
            pretrained: load the DEFAULT weights from the torch hub cache
                (downloading them when online). An error when unreachable.
            checkpoint: a state dict file; wins over ``pretrained``.
            **kwargs: passed to the torchvision builder (``num_classes``, ...);
                ``img_size`` (int or (h, w)) overrides the input size.
        """
        segmentation = model_name in segmentation_names()
        if not segmentation and model_name not in classification_names():
            hint = "(see `explainzoo list backbones 'torchvision:*'`)"
            raise unknown("torchvision model", model_name, self.list_names(), hint)
        if "weights" in kwargs or "weights_backbone" in kwargs:
            raise ExplainzooError(
                "pass pretrained=True (torchvision's DEFAULT weights) or checkpoint=PATH, not weights="
            )
        img_size = kwargs.pop("img_size", None)
        weights = _models().get_model_weights(model_name).DEFAULT
        random_kwargs = {**kwargs, "weights": None}
        if segmentation:
            random_kwargs = {"aux_loss": False, "weights_backbone": None, **random_kwargs}
        return build_backbone(
            f"torchvision:{model_name}",
            lambda: _models().get_model(model_name, **random_kwargs),
            preprocessing=lambda model: preprocessing_of(weights, model, img_size),
            labels=lambda model: _labels(weights, model, kwargs),
            pretrained=pretrained,
            checkpoint=checkpoint,
            hub=Hub(lambda: _pretrained(model_name, weights, kwargs), lambda _: f"torchvision ({weights})",
                    HUB_HINT),
            layer_hints=self.hints_for,
            output_key="out" if segmentation else None,
            kind="segmentation" if segmentation else None,
        )

    def hints_for(self, model: nn.Module) -> LayerHints | None:
        """Layer hints for a torchvision model; None for other models."""
        if not type(model).__module__.startswith("torchvision.models"):
            return None
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, nn.Module) and hasattr(model, "classifier"):  # segmentation
            last = list(backbone.named_children())[-1][0]
            return LayerHints(stage_paths=_resnet_stages(backbone, "backbone."),
                              last=(f"backbone.{last}",), trunk="backbone")
        stages = _resnet_stages(model, "")
        encoder = getattr(model, "encoder", None)
        if hasattr(model, "conv_proj") and isinstance(getattr(encoder, "layers", None), nn.Sequential):
            # ViT: class-token pooling, so CAMs target the last block's ln_1 (as for timm's ViTs)
            n = len(encoder.layers)
            names = [name for name, _ in encoder.layers.named_children()]
            return LayerHints(stage_paths=tuple(f"encoder.layers.{b}" for b in names), prefix_tokens=1,
                              last=(f"encoder.layers.{names[n - 1]}.ln_1",))
        containers = nn.Sequential | nn.ModuleList
        trunk = next((t for t in _TRUNKS if isinstance(getattr(model, t, None), containers)), "")
        swin = type(model).__name__ == "SwinTransformer"
        return LayerHints(stage_paths=stages, trunk=trunk, nhwc=swin, last=_trunk_end(model, trunk))


def _trunk_end(model: nn.Module, trunk: str) -> tuple[str, ...]:
    """The trunk's last feature module (not a pool), before the head (SqueezeNet's is a conv)."""
    if not trunk:
        return ()
    ends = [n for n, m in model.get_submodule(trunk).named_children() if not isinstance(m, _NOT_FEATURES)]
    return (f"{trunk}.{ends[-1]}",) if ends else ()


def _resnet_stages(model: nn.Module, prefix: str) -> tuple[str, ...]:
    """``layer1..layer4`` when the model has them (ResNet, ResNeXt, Wide ResNet, their dilated kin)."""
    names = [f"layer{i}" for i in range(1, 5)]
    if all(isinstance(getattr(model, n, None), nn.Module) for n in names):
        return tuple(prefix + n for n in names)
    return ()


def preprocessing_of(weights: Any, model: nn.Module, img_size: int | tuple[int, int] | None) -> Preprocessing:
    """:class:`Preprocessing` from a weights enum's ``transforms()`` (and the model's fixed size)."""
    t = weights.transforms()
    resize = _side(getattr(t, "resize_size", None))
    crop = _side(getattr(t, "crop_size", None))
    size = crop or resize or 224
    fixed = getattr(model, "image_size", None)  # ViT / MaxViT are built for one input size
    if isinstance(fixed, int) and fixed != size:
        size, resize = fixed, None
    h, w = (size, size)
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    crop_pct = float(crop) / float(resize) if crop and resize else 1.0
    interp = str(getattr(getattr(t, "interpolation", None), "value", "bilinear"))
    return Preprocessing(
        input_size=(int(h), int(w)),
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        interpolation="bicubic" if interp == "bicubic" else "bilinear",
        crop_pct=crop_pct,
    )


def _side(value: Any) -> int | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return int(value) if value else None


def _labels(weights: Any, model: nn.Module, kwargs: dict[str, Any]) -> list[str]:
    categories = list(weights.meta.get("categories") or [])
    n = kwargs.get("num_classes")
    if n is None or n == len(categories):
        return categories or default_labels(int(n or 0))
    return default_labels(int(n))


# -- torchvision's weights, read safely ------------------------------------------------------------


def offline() -> bool:
    """Whether downloads are switched off (``HF_HUB_OFFLINE`` or ``EXPLAINZOO_OFFLINE`` set)."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no") for v in _OFFLINE_VARS)


def cached_file(url: str) -> Path:
    """Where torch's hub keeps the file of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def _pretrained(model_name: str, weights: Any, kwargs: dict[str, Any]) -> nn.Module:
    """The model with torchvision's DEFAULT weights, every file read with ``weights_only=True``."""
    try:
        with _safe_weight_reads():
            return _models().get_model(model_name, weights=weights, **kwargs)
    except WeightsUnavailableError as exc:
        raise WeightsUnavailableError(f"no pretrained weights reachable for torchvision:{model_name}: {exc}. "
                                      f"{HUB_HINT}") from None


@contextmanager
def _safe_weight_reads():
    """Route torchvision's weight reads through :func:`load_state_dict_from_cache`.

    torchvision reads weights with ``torch.hub.load_state_dict_from_url``,
    which unpickles with ``weights_only=False`` and downloads with no timeout;
    for the duration of one build its weights API uses our reader instead.
    """
    import torchvision.models._api as api

    with _patch_lock:
        original = api.load_state_dict_from_url
        api.load_state_dict_from_url = load_state_dict_from_cache
        try:
            yield
        finally:
            api.load_state_dict_from_url = original


def load_state_dict_from_cache(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """torch hub's ``load_state_dict_from_url``, reading with ``weights_only=True``.

    A file missing from the cache is downloaded (with a timeout and the hash
    check of its name's suffix) unless offline.

    Raises:
        WeightsUnavailableError: not cached and offline, or the download failed.
    """
    path = cached_file(url)
    if not path.is_file():
        if offline():
            raise WeightsUnavailableError(f"{path.name} is not in the torch hub cache ({path.parent}) and "
                                          "downloads are off (HF_HUB_OFFLINE)")
        _download(url, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailableError(f"cannot read {path} as a state dict of tensors ({first}); "
                                      "delete it to download it again") from exc


def _download(url: str, path: Path) -> None:
    """Fetch ``url`` into ``path`` atomically, checking the sha256 prefix in its name."""
    if not url.startswith("https://"):
        raise WeightsUnavailableError(f"refusing to download weights from a non-https URL: {url}")
    path.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(r"-([a-f0-9]*)\.", path.name)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".partial") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:  # noqa: S310 - https only
                while chunk := resp.read(1 << 20):
                    tmp.write(chunk)
                    digest.update(chunk)
            tmp.close()
            if match and not digest.hexdigest().startswith(match.group(1)):
                raise WeightsUnavailableError(f"the download of {path.name} is corrupt (hash mismatch)")
            os.replace(tmp.name, path)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)


#: The family instance (what ``explainzoo.backbone_families`` may name).
TORCHVISION = TorchvisionFamily()
