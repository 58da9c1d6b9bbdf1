"""A Hugging Face Spaces bundle of the demo: ``explainzoo space DIR`` writes it, its ``app.py`` runs it.

The bundle (see ``docs/hosting.md``)::

    DIR/app.py            what Spaces runs (``python app.py``): calls :func:`run_space`
    DIR/requirements.txt  explainzoo's dependencies with its demo extra, pinned to the installed versions
    DIR/README.md         the Spaces front matter (sdk gradio, sdk_version, app_file) and a short text
    DIR/examples/         the example photos and their credits
    DIR/vendor/           this explainzoo, as installed (its packages and a ``.dist-info``
                          with its entry points, so the registries find the built-ins)

explainzoo is vendored rather than required because this version is not on
PyPI, and Spaces installs ``requirements.txt`` before it copies the rest of
the repository (a local wheel path in it would not resolve there). Once
explainzoo is published, ``explainzoo[demo]==VERSION`` in
``requirements.txt`` replaces ``vendor/``.

:func:`run_space` serves where the host says (``GRADIO_SERVER_NAME``,
``GRADIO_SERVER_PORT``), offline (``HF_HUB_OFFLINE=1`` unless set) with the
embedded default backbone, and built-in plugins only unless
``EXPLAINZOO_PLUGINS`` names some.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path

from explainzoo.backbones import ExplainzooError

__all__ = ["PACKAGES", "pinned_requirements", "run_space", "settings", "write_bundle"]

#: The packages of explainzoo (the ``package-dir`` mapping of its pyproject).
PACKAGES = ("backbones", "explainers", "batch", "demo")
DIST = "explainzoo"
EXTRA = "demo"

_APP = '''"""explainzoo's Gradio demo on Hugging Face Spaces (written by `explainzoo space`, explainzoo {version}).

Spaces runs `python app.py`. Settings (environment variables, see the README):
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (where to listen; default 0.0.0.0:7860),
EXPLAINZOO_PLUGINS (third-party plugins allowed; default: built-ins only),
EXPLAINZOO_BACKBONES, EXPLAINZOO_CONCURRENCY, EXPLAINZOO_QUEUE_SIZE, EXPLAINZOO_CACHE_SIZE,
HF_HUB_OFFLINE (default 1: the embedded offline weights only).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "vendor"))  # explainzoo {version}, vendored (not on PyPI)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("EXPLAINZOO_EXAMPLES", str(HERE / "examples"))
os.environ.setdefault("EXPLAINZOO_PLUGINS", {plugins!r})
{backbones}
from explainzoo.demo.space import run_space  # noqa: E402

if __name__ == "__main__":
    run_space()
'''

_README = """---
title: explainzoo
emoji: 🔎
colorFrom: indigo
colorTo: red
sdk: gradio
sdk_version: {gradio}
python_version: "{python}"
app_file: app.py
pinned: false
license: apache-2.0
short_description: See what an image classifier sees, on any backbone
---

# explainzoo

Saliency, SmoothGrad, Integrated Gradients, Guided Backprop and the Grad-CAM family, filters
and activations, on a zoo of image classifiers, side by side. The default backbone is
EfficientNet-Lite0 with offline ImageNet weights: the Space needs no network at run time.

Written by `explainzoo space` (explainzoo {version}). Settings are environment variables
(Space settings -> Variables): `EXPLAINZOO_PLUGINS` (third-party plugins allowed; default
none), `EXPLAINZOO_BACKBONES`, `EXPLAINZOO_CONCURRENCY` (model runs at once, default 2),
`EXPLAINZOO_QUEUE_SIZE` (requests that may wait, default 64), `HF_HUB_OFFLINE` (default 1).
Example photos: scikit-image sample data (see examples/CREDITS).
"""


def pinned_requirements(dist: str = DIST, extra: str = EXTRA) -> list[str]:
    """``dist``'s requirements with its ``extra``, each pinned to the installed version.

    A requirement that is not installed keeps its specifier (and its marker).
    """
    from packaging.requirements import Requirement

    lines: list[str] = []
    for text in metadata.requires(dist) or ():
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        if req.marker is not None and "extra" not in str(req.marker):
            lines.append(text)  # a platform marker: kept as written
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            lines.append(f"{req.name}{req.specifier}")
            continue
        lines.append(f"{req.name}=={version}")
    return list(dict.fromkeys(lines))


def _vendor(target: Path) -> None:
    """Copy the installed explainzoo packages and a minimal ``.dist-info`` (entry points) to ``target``."""
    dist = metadata.distribution(DIST)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "examples", "*.pyi")
    for name in PACKAGES:
        src = Path(list(importlib.import_module(f"explainzoo.{name}").__path__)[0])
        shutil.copytree(src, target / "explainzoo" / name, ignore=skip, dirs_exist_ok=True)
    info = target / f"{DIST}-{dist.version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {dist.version}\n")
    (info / "entry_points.txt").write_text(dist.read_text("entry_points.txt") or "")
    (info / "INSTALLER").write_text("explainzoo space\n")


def _examples(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    root = resources.files("explainzoo.demo") / "examples"
    for item in root.iterdir():
        if item.is_file() and (item.name.endswith(".jpg") or item.name == "CREDITS"):
            (target / item.name).write_bytes(item.read_bytes())


def write_bundle(folder: str | Path, plugins: str = "", backbones: str | None = None) -> Path:
    """Write the Spaces bundle into ``folder`` (created; existing bundle files are replaced).

    Args:
        folder: where to write it.
        plugins: the bundle's default allowlist (``EXPLAINZOO_PLUGINS``): ``""``
            for built-ins only, or comma-separated plugin names.
        backbones: the bundle's default ``EXPLAINZOO_BACKBONES`` (None: the curated list).

    Returns:
        The folder.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ExplainzooError(f"{str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "vendor").exists():
        shutil.rmtree(out / "vendor")
    version = metadata.version(DIST)
    line = f'os.environ.setdefault("EXPLAINZOO_BACKBONES", {backbones!r})\n' if backbones else ""
    (out / "app.py").write_text(_APP.format(version=version, plugins=plugins, backbones=line))
    reqs = pinned_requirements()
    head = f"# explainzoo {version} with its demo extra, pinned to the versions installed when this was written;\n"
    head += "# explainzoo itself is vendored in vendor/ (not on PyPI).\n"
    (out / "requirements.txt").write_text(head + "\n".join(reqs) + "\n")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    (out / "README.md").write_text(
        _README.format(gradio=metadata.version("gradio"), python=python, version=version)
    )
    _examples(out / "examples")
    _vendor(out / "vendor")
    return out


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ExplainzooError(f"{name} must be a whole number, got {raw!r}") from None


def settings() -> dict[str, object]:
    """The keyword arguments of :func:`~explainzoo.demo.app.launch` that the environment sets.

    ``GRADIO_SERVER_NAME`` (default ``0.0.0.0``: a bundle is for hosting),
    ``GRADIO_SERVER_PORT`` (7860), ``EXPLAINZOO_PLUGINS`` (default: built-ins
    only), ``EXPLAINZOO_BACKBONES`` (default: the curated list),
    ``EXPLAINZOO_CONCURRENCY`` (2), ``EXPLAINZOO_QUEUE_SIZE`` (64),
    ``EXPLAINZOO_CACHE_SIZE`` (8).
    """
    backbones = os.environ.get("EXPLAINZOO_BACKBONES", "").strip() or None
    return {
        "host": os.environ.get("GRADIO_SERVER_NAME", "").strip() or "0.0.0.0",
        "port": _int_env("GRADIO_SERVER_PORT", 7860),
        "backbones": backbones,
        "plugins": os.environ.get("EXPLAINZOO_PLUGINS", ""),
        "concurrency_limit": _int_env("EXPLAINZOO_CONCURRENCY", 2),
        "queue_size": _int_env("EXPLAINZOO_QUEUE_SIZE", 64),
        "cache_size": _int_env("EXPLAINZOO_CACHE_SIZE", 8),
    }


def run_space(report: Callable[[str], None] | None = None) -> None:
    """Serve the demo as the environment says (:func:`settings`); blocks until stopped."""
    import logging

    from .app import launch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    here = Path(__file__).resolve().parents[2]
    logging.getLogger(__name__).info("explainzoo %s from %s", metadata.version(DIST), here)
    launch(**settings(), report=report)  # type: ignore[arg-type]
