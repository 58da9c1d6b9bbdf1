"""Image -> normalised model input, done with torch (no PIL in the core)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ExplainzooError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(image: Any) -> Tensor:
    """Convert an image to a float (3,H,W) tensor in [0,1].

    Accepts a PIL image (anything with ``.convert``), a numpy array (H,W),
    (H,W,3) or (H,W,4) of uint8, uint16 or floats in [0,1], or a torch tensor
    (3,H,W) in [0,1]. Alpha is composited on white.
    """
    if isinstance(image, Tensor):
        t = image.detach().float()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise ExplainzooError(f"expected an image tensor of shape (3,H,W), got {tuple(t.shape)}")
        return t.clamp(0, 1)
    if hasattr(image, "convert"):  # PIL, without importing it here
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
    else:
        raise ExplainzooError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ExplainzooError(f"expected an image of shape (H,W), (H,W,3) or (H,W,4), got {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        rgb, a = arr[..., :3], arr[..., 3:]
        arr = rgb * a + (1.0 - a)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def _uint8_rgb(image: Any) -> Tensor | None:
    """A (3,H,W) uint8 view of an 8-bit RGB image (PIL or array), else None."""
    if hasattr(image, "convert"):  # PIL, as in image_to_tensor
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        arr = image
    else:
        return None
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        return None  # the float path says "too small"
    # a channels-last (3,H,W) view: torch's uint8 kernels run on that layout
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input: timm's data config, applied with torch.

    Attributes:
        input_size: (H, W) of the model input.
        mean, std: per-channel normalisation.
        interpolation: "bilinear" or "bicubic" (antialiased resize).
        crop_pct: the shorter side is resized to ``size / crop_pct`` and the
            centre ``input_size`` is cropped (1.0: resize to the size exactly).
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875

    def resize_crop(self, image: Any) -> Tensor:
        """The (3,H,W) [0,1] image the model sees, before normalisation.

        8-bit RGB images (PIL, uint8 arrays) are resized in uint8, as timm's
        PIL eval transform does (torch's uint8 antialiased kernels follow
        Pillow's: within rounding of PIL's resize, and ~5x faster than a float
        resize, which differs from PIL by ~1e-3 on average); anything else is
        resized in float32.
        """
        t = _uint8_rgb(image)
        if t is None:
            t = image_to_tensor(image)
        h, w = self.input_size
        ih, iw = t.shape[-2:]
        if ih < 2 or iw < 2:
            raise ExplainzooError(f"image of {iw}x{ih} pixels is too small to explain")
        scale_h = math.floor(h / self.crop_pct)
        scale_w = math.floor(w / self.crop_pct)
        # resize so the image covers (scale_h, scale_w), keeping its aspect ratio
        ratio = max(scale_h / ih, scale_w / iw)
        rh, rw = max(h, round(ih * ratio)), max(w, round(iw * ratio))
        mode = "bicubic" if self.interpolation == "bicubic" else "bilinear"
        t = F.interpolate(t[None], size=(rh, rw), mode=mode, align_corners=False, antialias=True)[0]
        top, left = (rh - h) // 2, (rw - w) // 2
        t = t[:, top : top + h, left : left + w]
        if t.dtype == torch.uint8:
            return t.float().div_(255.0).contiguous()
        return t.clamp(0, 1).contiguous()

    def normalize(self, image: Tensor) -> Tensor:
        """(…,3,H,W) in [0,1] -> normalised model input."""
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(3, 1, 1)
        return (image - mean) / std

    def unnormalize(self, x: Tensor) -> Tensor:
        """Model input -> (…,3,H,W) image in [0,1] (for overlays)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def __call__(self, image: Any) -> Tensor:
        """Image (PIL, array or tensor) -> (1,3,H,W) float32 model input."""
        return self.normalize(self.resize_crop(image))[None].float()
