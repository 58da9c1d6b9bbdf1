"""Our own image loader for untrusted uploads.

The demo never lets Gradio (or anyone else) decode an uploaded file: every
image goes through :func:`load_image`, which

* reads at most :data:`MAX_FILE_BYTES` and accepts only the formats in
  :data:`ALLOWED_FORMATS` (PNG, JPEG, WebP, BMP, GIF; for GIF and animated
  WebP only the first frame is decoded),
* refuses images with more than :data:`MAX_PIXELS` pixels (or the caller's
  lower ``max_pixels``: a public host passes one) *before* decoding them (the
  cap is below Pillow's decompression-bomb limit, and Pillow's own bomb
  warning is turned into an error as a second line of defence),
* decodes JPEGs in draft mode: at the smallest 1/2, 1/4 or 1/8 scale whose
  short side still covers ``target_side`` (what the backbone needs) or
  ``max_side``. PNG, WebP, BMP and GIF have no reduced-scale decoding, so a
  large one is decoded in full and then box-reduced by an integer factor
  before any mode conversion (the only full-size copy is the decoded image
  itself); for them the pixel cap is the defence that bounds memory and time,
* refuses tiny images (a side under :data:`MIN_SIDE`) and extreme aspect
  ratios (over :data:`MAX_ASPECT`), which would be meaningless or, resized to a
  model's input, enormous,
* applies the EXIF orientation, composites transparency on white (the same
  convention as :func:`explainzoo.backbones.preprocess.image_to_tensor`),
  scales 16-bit images to 8 bits correctly and expands palettes,
* and downsizes the result to at most :data:`MAX_SIDE` pixels per side (no
  model of the zoo looks at more).

It returns an 8-bit RGB :class:`PIL.Image.Image` or raises
:class:`ImageError` with a message a person understands.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ExplainzooError

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_ASPECT",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageError",
    "load_image",
    "to_rgb",
]

#: Pillow decoders we let open a file.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
#: What those decoders may report: MPO is the multi-picture JPEG many phone
#: cameras write (opened by the JPEG decoder); only its main picture is used.
_DECODED_FORMATS: tuple[str, ...] = (*ALLOWED_FORMATS, "MPO")
#: Largest file accepted, in bytes (the Gradio app also sets ``max_file_size``).
MAX_FILE_BYTES: int = 10 * 1024 * 1024
#: Largest pixel count accepted (checked from the header, before decoding). Pillow
#: warns at 89.5 MP and fails at twice that; 40 MP is a 7700 x 5200 photo.
MAX_PIXELS: int = 40_000_000
#: Smallest side accepted, in pixels.
MIN_SIDE: int = 8
#: Largest ratio of the long side to the short side.
MAX_ASPECT: float = 10.0
#: Decoded images are downsized to fit a square of this side.
MAX_SIDE: int = 1024

_FORMAT_NAMES = "PNG, JPEG, WebP, BMP or GIF"
_ORIENTATION = 0x0112
# Errors Pillow's decoders raise on broken files (struct/zlib for truncated chunks).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError)


class ImageError(ExplainzooError):
    """An uploaded image that cannot be used; the message says why and what to do."""


def _read_bytes(source: str | os.PathLike[str] | bytes | bytearray) -> bytes:
    """The file's bytes, refusing empty and oversized files."""
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no image file at {path.name!r}; upload a {_FORMAT_NAMES} image")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"the file is {size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB")
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    if not data:
        raise ImageError("the file is empty; upload a PNG, JPEG, WebP, BMP or GIF image")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"the file is {len(data) / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB")
    return data


def _check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse too many pixels, tiny images and extreme aspect ratios."""
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
            f"the limit is {max_pixels / 1e6:.1f} MP: downsize it first"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"the image is only {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed "
            "to explain anything"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise ImageError(
            f"the image is {width}x{height} pixels, an aspect ratio of {aspect:.0f}:1; "
            f"crop it to at most {MAX_ASPECT:.0f}:1 (models look at a square centre crop)"
        )


def _sixteen_bit_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit (``I;16*``) or 32-bit integer (``I``) grayscale -> 8-bit RGB.

    PNG stores 16-bit grayscale as 0..65535; Pillow opens it as ``I;16`` (or
    ``I`` in older versions). ``convert("L")`` would clip it at 255, turning
    almost every pixel white, so the values are scaled instead.
    """
    arr = np.asarray(im).astype(np.float64)
    arr = np.clip(arr, 0.0, 65535.0) / 257.0
    gray = np.round(arr).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB: alpha over white, 16-bit scaled, palette expanded.

    Raises:
        ImageError: a pixel mode with no sensible RGB reading (e.g. float images).
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(im)
    if mode == "F":
        raise ImageError("floating-point images are not supported; save it as an 8- or 16-bit PNG")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im.copy()
    return im.convert("RGB")


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orient(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (values 2..8); other values mean 'as stored'."""
    orientation = im.getexif().get(_ORIENTATION, 1)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        transposed = ImageOps.exif_transpose(im)
        if transposed is not None:
            return transposed
    return im


def _shrink(im: Image.Image, max_side: int) -> Image.Image:
    """Box-reduce a decoded image by the largest integer factor that keeps its long side >= ``max_side``.

    Done before any mode conversion, so no full-size copy is made: alpha
    images are reduced premultiplied (``RGBa``), palettes expanded first.
    """
    factor = max(im.size) // max(max_side, 1)
    if factor < 2:
        return im
    try:
        if _has_alpha(im):
            return im.convert("RGBA").convert("RGBa").reduce(factor).convert("RGBA")
        if im.mode == "P":
            im = im.convert("RGB")
        elif im.mode.startswith("I;16"):
            im = im.convert("I")
        return im.reduce(factor)
    except (ValueError, NotImplementedError):  # a mode reduce() does not handle: keep the full size
        return im


def _decode(data: bytes, max_side: int, max_pixels: int, target_side: int | None) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow's own bomb check as a second line of defence behind MAX_PIXELS.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        except UnidentifiedImageError:
            raise ImageError(
                f"this file is not an image in a supported format; upload a {_FORMAT_NAMES} image"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"the image has too many pixels ({exc})") from None
        with im:
            if im.format not in _DECODED_FORMATS:  # pragma: no cover - Pillow honours formats=
                raise ImageError(f"{im.format} images are not accepted; upload a {_FORMAT_NAMES} image")
            width, height = im.size
            _check_size(width, height, max_pixels)
            if im.format in ("JPEG", "MPO"):
                # decode at a reduced scale (1/2, 1/4, 1/8) whose short side still covers the need
                side = min(target_side, max_side) if target_side else max_side
                im.draft("RGB", (side, side))
            im.seek(0)  # GIF / animated WebP: the first frame only
            im.load()
            oriented = _orient(im)
            rgb = to_rgb(_shrink(oriented, max_side))
    return rgb


def _pixel_cap(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < MIN_SIDE * MIN_SIDE:
        raise ImageError(f"max_pixels must be an int of at least {MIN_SIDE * MIN_SIDE}, got {max_pixels!r}")
    return min(max_pixels, MAX_PIXELS)


def load_image(
    source: Any,
    max_side: int = MAX_SIDE,
    *,
    max_pixels: int = MAX_PIXELS,
    target_side: int | None = None,
) -> Image.Image:
    """Decode an untrusted image safely into an 8-bit RGB PIL image.

    Args:
        source: a file path, the file's bytes, or an already decoded
            :class:`PIL.Image.Image` or (H,W[,C]) uint8/uint16 array (size
            checks and mode conversion still apply).
        max_side: the result is downsized (keeping its aspect ratio) to fit a
            square of this side.
        max_pixels: refuse images with more pixels than this (read from the
            header, before decoding); a public host passes a lower cap than
            :data:`MAX_PIXELS`, which is also the most it may be.
        target_side: the short side the caller needs (e.g. a backbone's
            resize side, ``input / crop_pct``): JPEGs are decoded at the
            smallest draft scale that still covers it (a smaller result than
            ``max_side``); None: ``max_side``.

    Raises:
        ImageError: empty, oversized, corrupt, unsupported, tiny or extremely
            elongated images; the message says which and what to do.
    """
    max_pixels = _pixel_cap(max_pixels)
    if isinstance(source, Image.Image):
        _check_size(*source.size, max_pixels)
        rgb = to_rgb(source)
    elif isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.dtype not in (np.uint8, np.uint16):
            raise ImageError(
                f"expected an (H,W) or (H,W,3|4) uint8/uint16 array, got {source.dtype} {source.shape}"
            )
        arr = source
        if arr.dtype == np.uint16:
            arr = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
        try:
            pil = Image.fromarray(arr)
        except TypeError as exc:
            raise ImageError(f"cannot read an array of shape {source.shape} as an image") from exc
        _check_size(*pil.size, max_pixels)
        rgb = to_rgb(pil)
    elif isinstance(source, str | os.PathLike | bytes | bytearray):
        data = _read_bytes(source)
        try:
            rgb = _decode(data, max_side, max_pixels, target_side)
        except ImageError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageError(
                f"the image file is corrupt or truncated and cannot be decoded ({type(exc).__name__}: {exc})"
            ) from None
    elif source is None:
        raise ImageError("no image given; upload a photo or pick one of the examples")
    else:
        raise ImageError(f"expected an image file, got {type(source).__name__}")
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb
