"""What a job runs on: files, folders, ImageFolder trees, globs and lists.

:func:`collect` turns the user's arguments into a sorted, de-duplicated list
of :class:`Item` (absolute path, path relative to its root, optional label).
A path that does not exist or a folder with no images is an error before any
work starts; a file that *looks* like an image but cannot be decoded is not
(it becomes an error row later).
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from explainzoo.backbones import ExplainzooError

#: Extensions picked up when walking folders and globs (the loader's allowlist decides later).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
#: Extensions read as lists of paths (one a line, or CSV with a ``path`` column).
LIST_EXTENSIONS: frozenset[str] = frozenset({".txt", ".csv", ".tsv", ".lst"})


@dataclass(frozen=True)
class Item:
    """One input image.

    Attributes:
        path: absolute path of the file.
        relpath: path relative to the folder it was found in (its name for files);
            overlays are written under it.
        label: the class name when known (ImageFolder folder name, list column).
    """

    path: str
    relpath: str
    label: str | None = None


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> list[Item]:
    """Images under ``root``, recursively; ``root/<label>/...`` gives labels."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and _is_image(p) and not p.name.startswith("."))
    if not files:
        raise ExplainzooError(
            f"no images in folder {str(root)!r} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "point to a folder of photos"
        )
    rel = [p.relative_to(root) for p in files]
    # ImageFolder: every image sits exactly one folder below the root
    labelled = all(len(r.parts) == 2 for r in rel)
    return [
        Item(str(p.resolve()), r.as_posix(), r.parts[0] if labelled else None)
        for p, r in zip(files, rel)
    ]


def _glob(pattern: str) -> list[Item]:
    hits = sorted(Path(h) for h in glob.glob(os.path.expanduser(pattern), recursive=True))
    out: list[Item] = []
    for h in hits:
        if h.is_dir():
            out.extend(_walk(h))
        elif h.is_file() and _is_image(h):
            out.append(Item(str(h.resolve()), h.name))
    if not out:
        raise ExplainzooError(f"the pattern {pattern!r} matches no image files; check the path and quote it")
    return out


def _read_list(path: Path) -> list[Item]:
    """A text file of paths (one a line) or a CSV/TSV with a ``path`` and optional ``label`` column."""
    base = path.parent
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ExplainzooError(f"the list {str(path)!r} is empty; write one image path per line")
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    rows: list[tuple[str, str | None]]
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = list(csv.reader(lines, delimiter=delim))
        head = [h.strip().lower() for h in reader[0]]
        if "path" in head:
            pi, li = head.index("path"), (head.index("label") if "label" in head else None)
            body = reader[1:]
        else:
            pi, li, body = 0, (1 if len(reader[0]) > 1 else None), reader
        rows = [(r[pi].strip(), r[li].strip() if li is not None and len(r) > li and r[li].strip() else None)
                for r in body if r and r[pi].strip()]
    else:
        rows = [(ln.strip(), None) for ln in lines]
    out = []
    for name, label in rows:
        p = Path(os.path.expanduser(name))
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise ExplainzooError(f"{str(path)!r} lists {name!r}, which does not exist; fix or remove that line")
        out.append(Item(str(p.resolve()), name, label))
    return out


def _one(arg: str) -> list[Item]:
    if any(ch in arg for ch in "*?["):
        return _glob(arg)
    p = Path(os.path.expanduser(arg))
    if not p.exists():
        raise ExplainzooError(f"no such file or folder: {arg!r}; check the path")
    if p.is_dir():
        return _walk(p)
    if p.suffix.lower() in LIST_EXTENSIONS:
        return _read_list(p)
    return [Item(str(p.resolve()), p.name)]


def collect(inputs: Sequence[str] | str, limit: int | None = None) -> list[Item]:
    """Resolve the job's inputs to images.

    Args:
        inputs: image files, folders (recursive; ``root/<label>/*.jpg`` gives
            labels), globs (``"photos/**/*.png"``), or ``.txt``/``.csv``/``.tsv``
            lists of paths (CSV: a ``path`` and an optional ``label`` column;
            relative paths are relative to the list).
        limit: keep the first N images (after sorting and de-duplication).

    Returns:
        Items in a stable order; the first occurrence of a path wins.

    Raises:
        ExplainzooError: a missing path, an empty folder or list, a glob with no match.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [str(inputs)]
    if not inputs:
        raise ExplainzooError("no inputs given; pass image files, folders, globs or a list file")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ExplainzooError(f"limit must be a positive integer, got {limit!r}")
    seen: dict[str, Item] = {}
    for arg in inputs:
        for item in _one(str(arg)):
            seen.setdefault(item.path, item)
    items = list(seen.values())
    return items[:limit] if limit else items


def labels_of(items: Iterable[Item]) -> set[str]:
    """The distinct labels of ``items`` (empty when none has one)."""
    return {i.label for i in items if i.label is not None}
