"""``run_batch``: a dataset job from Python (the CLI's ``batch`` command wraps it)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explainzoo.backbones import ExplainzooError

from .inputs import Item, collect, labels_of
from .spec import JobSpec, build_backbone, check, check_backbone
from .store import KEY, ShardBuffer, Store, _pa, now

log = logging.getLogger("explainzoo.batch")


@dataclass
class JobReport:
    """What a run did.

    Attributes:
        out: the job folder.
        images: images in the job.
        rows: rows stored in total (all runs), ``failed_rows`` of them errors.
        images_failed: images with at least one error row.
        written: rows this run wrote.
        seconds: wall time of this run.
    """

    out: Path
    images: int
    rows: int
    failed_rows: int
    images_failed: int
    written: int
    seconds: float

    @property
    def all_failed(self) -> bool:
        return self.images > 0 and self.images_failed == self.images


def _pending(spec: JobSpec, items: list[Item], done: set) -> dict[str, list[tuple[Item, list[str]]]]:
    todo: dict[str, list[tuple[Item, list[str]]]] = {}
    for name in spec.backbones:
        todo[name] = [
            (it, ms) for it in items
            if (ms := [m for m in spec.explainers if (it.path, name, m) not in done])
        ]
    return todo


def _counts(store: Store) -> dict[str, int]:
    """Rows, failed rows, images and failed images over every shard."""
    _, pq = _pa()
    paths: set[str] = set()
    failed: set[str] = set()
    rows = bad = 0
    for shard in store.shards():
        t = pq.read_table(shard, columns=["path", "error"])
        p, e = t.column("path").to_pylist(), t.column("error").to_pylist()
        rows += len(p)
        paths.update(p)
        for path, err in zip(p, e):
            if err is not None:
                bad += 1
                failed.add(path)
    return {"rows": rows, "failed_rows": bad, "images": len(paths), "images_failed": len(failed)}


def run_batch(
    inputs: Sequence[str] | str,
    backbones: Sequence[str] | str,
    explainers: Sequence[str] | str,
    out: str | Path,
    *,
    extend: bool = False,
    progress: bool | Callable[[int], Any] = False,
    html: bool = True,
    **settings: Any,
) -> JobReport:
    """Explain every image with every backbone and method; rows go to ``out``.

    Rerunning with the same arguments continues where a previous run stopped
    (each (image, backbone, method) row is stored exactly once).

    Args:
        inputs: files, folders, globs or list files (see :func:`explainzoo.batch.collect`).
        backbones: backbone names (a list or comma-separated).
        explainers: map methods (a list or comma-separated).
        out: the job folder.
        extend: allow adding inputs, backbones or methods to an existing job.
        progress: True for a tqdm bar on stderr, or a callable given the
            number of images each step finishes.
        html: write ``out/index.html`` at the end.
        **settings: the other :class:`~explainzoo.batch.spec.JobSpec` fields:
            ``layer``, ``target`` (None/"top1", "label", an index or a name),
            ``options``, ``metrics`` (["deletion", "insertion"]), ``metric_steps``,
            ``weights`` ("pretrained", falling back to random init with a
            warning; "random"; "checkpoint" with ``checkpoint``), ``image_size``,
            ``seed``, ``limit``, ``engine`` ("local" or "ray"), ``device``,
            ``batch_size`` (int or "auto"), ``workers``, ``shard_rows``,
            ``overlays``, ``ray_address``, ``actors``.

    Raises:
        ExplainzooError: before any work starts: a missing input, an empty
            folder, an unknown backbone/method/layer/option, or ``out``
            holding a different job.
    """
    known = {f.name for f in dataclasses.fields(JobSpec)}
    bad = sorted(set(settings) - known)
    if bad:
        raise ExplainzooError(f"run_batch got unknown settings {bad}; see JobSpec for the accepted ones")
    spec = JobSpec(inputs=list(inputs) if not isinstance(inputs, str) else [inputs],
                   backbones=backbones, explainers=explainers, **settings)
    check(spec)
    items = collect(spec.inputs, spec.limit)
    store = Store(out)
    store.check(spec, extend)
    built = {}
    labels = labels_of(items)
    for name in spec.backbones:  # fail on names, layers and targets before any work
        bb = build_backbone(spec, name)
        check_backbone(spec, bb, labels)
        built[name] = bb
    return _execute(spec, store, items, built, extend, progress, html)


def _execute(spec: JobSpec, store: Store, items: list[Item], built: dict, extend: bool,
             progress: bool | Callable[[int], Any], html: bool) -> JobReport:
    """Open OUT, run the engine on what is pending, record counts, write the page."""
    t0 = time.perf_counter()
    manifest = store.open(spec, extend)
    manifest["backbones"] = {
        n: {"weights": b.weights, "preprocessing": dataclasses.asdict(b.preprocessing)} for n, b in built.items()
    }
    manifest["execution"] = {k: v for k, v in spec.to_dict().items() if k not in manifest["spec"]}
    store.write_manifest(manifest)
    todo = _pending(spec, items, store.done())
    buffer = ShardBuffer(store, spec.shard_rows)
    bar, step = _progress(progress, sum(len(w) for w in todo.values()))
    try:
        if spec.engine == "ray":
            from .ray_engine import run_ray

            built.clear()  # actors build their own
            run_ray(spec, store, todo, manifest["backbones"], buffer, step)
        else:
            from .local import run_local

            run_local(spec, store, todo, built, buffer, step)
    finally:
        buffer.flush()
        if bar is not None:
            bar.close()
    counts = _counts(store)
    manifest["counts"] = counts
    manifest["finished"] = now()
    manifest["runs"][-1]["finished"] = manifest["finished"]
    manifest["runs"][-1]["rows_written"] = buffer.written
    store.write_manifest(manifest)
    if html:
        from .report import write_index

        write_index(store.root)
    return JobReport(store.root, len(items), counts["rows"], counts["failed_rows"],
                     counts["images_failed"], buffer.written, time.perf_counter() - t0)


def _progress(progress: bool | Callable[[int], Any], total: int):
    """(tqdm bar or None, step callable or None)."""
    if callable(progress):
        return None, progress
    if not progress:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - the batch extra installs it
        return None, None
    bar = tqdm(total=total, unit="img", desc="explain", dynamic_ncols=True)
    return bar, bar.update


__all__ = ["KEY", "JobReport", "run_batch"]
