"""Files in and out of the Gradio app: undecoded uploads, bundled examples, result PNGs.

Uploads reach our code undecoded (the library's safe loader is the only
decoder); results are written once, atomically, into a private folder made
with :func:`tempfile.mkdtemp` (mode 0700, a fresh name: nothing planted in
advance at a predictable path is ever followed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from explainzoo.backbones.images import MAX_FILE_BYTES

__all__ = [
    "CACHE_TTL_S",
    "EXAMPLES_ENV",
    "EXAMPLE_NAMES",
    "example_images",
    "npy_file",
    "output_dir",
    "png_file",
    "result_files",
    "uploaded_image",
]

#: Uploaded and generated files older than this many seconds are deleted (checked as often).
CACHE_TTL_S = 3600
EXAMPLE_NAMES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
#: A folder of example photos to use instead of the bundled ones (the Spaces bundle sets it).
EXAMPLES_ENV = "EXPLAINZOO_EXAMPLES"
#: What a result file may be called: the name parts are ours, never the user's.
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

_output_dir: Path | None = None
_output_lock = threading.Lock()


def _undecoded_upload(payload: Any) -> str | bytes | None:
    """The uploaded file's path (or a data URL's bytes), not decoded.

    Gradio has already checked that the path is in its upload folder.
    """
    if payload is None:
        return None
    url = getattr(payload, "url", None)
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url.partition(",")
        if ";base64" not in header:
            raise gr.Error("images sent as data URLs must be base64-encoded")
        if len(data) > MAX_FILE_BYTES * 4 // 3 + 4:
            raise gr.Error(f"the image is larger than {MAX_FILE_BYTES // 2**20} MiB")
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise gr.Error(f"the image data URL is not valid base64 ({exc})") from exc
    path = getattr(payload, "path", None)
    if not path:
        raise gr.Error("no image was received; upload it again")
    return str(path)


def uploaded_image(**kwargs: Any) -> gr.Image:
    """A stock ``gr.Image`` whose handler receives the uploaded file untouched.

    Stock ``gr.Image`` opens every upload with Pillow before our code sees it;
    this one's ``preprocess`` returns the path of the file in Gradio's upload
    folder (or the bytes of a ``data:`` URL), so that
    :func:`~explainzoo.backbones.images.load_image` is the only decoder. (An
    instance override rather than a subclass: Gradio writes a ``.pyi`` stub
    next to the module of every Component subclass.)
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = _undecoded_upload  # type: ignore[method-assign]
    return image


def example_images() -> list[str]:
    """Paths of the example photos: ``$EXPLAINZOO_EXAMPLES`` when set, else the bundled ones
    (package data: ``demo/examples``)."""
    folder = os.environ.get(EXAMPLES_ENV, "").strip()
    root: Any = Path(folder) if folder else resources.files("explainzoo.demo") / "examples"
    out = []
    for name in EXAMPLE_NAMES:
        path = Path(str(root / name))
        if path.is_file():
            out.append(str(path))
    return out


def output_dir() -> Path:
    """This process's private folder for result PNGs: created once with ``mkdtemp`` (mode 0700)."""
    global _output_dir
    with _output_lock:
        if _output_dir is None or not _output_dir.is_dir():
            _output_dir = Path(tempfile.mkdtemp(prefix="explainzoo-demo-"))
        return _output_dir


def _expire(folder: Path) -> None:
    cutoff = time.time() - CACHE_TTL_S
    for old in [*folder.glob("*.png"), *folder.glob("*.npy")]:
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            pass  # removed by a concurrent request: nothing left to do


def _write_once(data: bytes, stem: str, suffix: str) -> str:
    """Write ``data`` atomically as ``<stem><content hash><suffix>`` in :func:`output_dir`."""
    folder = output_dir()
    path = folder / f"{stem}{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if path.exists():
        os.utime(path)
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".staging-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(staging, path)
    _expire(folder)
    return str(path)


def png_file(image: Any, stem: str = "") -> str | None:
    """Write a PIL image once as a PNG named by its content hash; return the path.

    Gradio caches a returned PIL image by writing it in place to a path named by
    its content hash, so two concurrent requests with the same output (common on
    a shared demo) can serve a half-written file (seen: "Too little data for
    declared Content-Length"). A returned *path* goes through Gradio's atomic
    copy (temporary name, then rename) instead, and we write ours the same way.
    Files older than :data:`CACHE_TTL_S` are removed as new ones are written.

    Args:
        image: a PIL image (None: nothing written).
        stem: a readable start of the file name (the download's name).
    """
    if image is None:
        return None
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return _write_once(buf.getvalue(), stem, ".png")


def npy_file(array: Any, stem: str = "") -> str:
    """Write a numpy array once as ``.npy`` (no pickled objects) named by its content hash."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.asarray(array, dtype=np.float32)), allow_pickle=False)
    return _write_once(buf.getvalue(), stem, ".npy")


def result_files(overlay: Any, raw_map: Any, *parts: Any) -> list[str]:
    """The downloads of one result: the overlay PNG and the raw map ``.npy``.

    Args:
        overlay: the overlay (PIL image).
        raw_map: the map as the explainer computed it (layer resolution, its units).
        parts: what the file names start with (explainer, backbone, class), made safe.
    """
    names = (_SAFE_NAME.sub("_", str(p).split(":")[-1]).strip("_") for p in parts if p is not None)
    stem = "-".join(n for n in names if n)
    stem = f"{stem[:80]}-" if stem else ""
    out = [png_file(overlay, f"{stem}overlay-"), npy_file(raw_map, f"{stem}map-")]
    return [p for p in out if p is not None]
