"""The job's folder on disk: manifest, atomic Parquet shards, resume state.

Layout of ``OUT``::

    OUT/manifest.json              the spec, versions, times, counts, schema version
    OUT/results/part-*.parquet     the rows (one per image x backbone x method)
    OUT/overlays/<backbone>/<method>/<relpath>.png   with overlays on
    OUT/index.html                 the summary page

Every file is written to a temporary name in the same folder and renamed into
place (``os.replace`` is atomic on POSIX and Windows), so a reader never sees a
partial file and a killed run loses at most the shard it was filling. The
shards are the truth about what is done: a rerun reads their key columns.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from explainzoo.backbones import ExplainzooError

from .spec import JobSpec, compare

#: Bumped whenever a column changes meaning; readers check it.
SCHEMA_VERSION = 1
#: Columns that identify a row.
KEY = ("path", "backbone", "method")


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - the batch extra installs it
        raise ExplainzooError(f"dataset jobs need pyarrow: pip install 'explainzoo[batch]' ({exc})") from None
    return pa, pq


def schema():
    """The pyarrow schema of a results row (documented in docs/batch.md)."""
    pa, _ = _pa()
    f32, i32, s = pa.float32(), pa.int32(), pa.string()
    return pa.schema([
        ("path", s), ("relpath", s), ("image_width", i32), ("image_height", i32),
        ("backbone", s), ("weights", s), ("method", s), ("layer", s), ("options", s),
        ("input_height", i32), ("input_width", i32),
        ("target", i32), ("target_name", s), ("score", f32), ("probability", f32),
        ("top5", pa.list_(i32)), ("top5_names", pa.list_(s)), ("top5_probs", pa.list_(f32)),
        ("label", s), ("label_index", i32), ("correct", pa.bool_()),
        ("raw", pa.binary()), ("raw_shape", pa.list_(i32)), ("raw_scale", f32), ("map_rule", s),
        ("deletion_auc", f32), ("insertion_auc", f32),
        ("deletion_auc_random", f32), ("insertion_auc_random", f32),
        ("time_ms", f32), ("error", s), ("run_id", s),
        ("pointing", f32), ("pointing_random", f32),
    ])


def conform(table: Any) -> Any:
    """``table`` in :func:`schema`, columns added since it was written filled with nulls.

    New columns are only ever appended, nullable, so shards of an older
    writer (of the same schema version) stay readable and resumable.
    """
    pa, _ = _pa()
    full = schema()
    names = set(table.column_names)
    for f in full:
        if f.name not in names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(full.names).cast(full)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str]:
    """Versions of what computed the rows."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("explainzoo", "torch", "timm", "pyarrow", "ray"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class Store:
    """One OUT folder: open it for a spec, learn what is done, write shards."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.root = Path(out)
        self.results = self.root / "results"
        self.manifest_path = self.root / "manifest.json"
        self.run_id = _dt.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._seq = 0

    # -- manifest ------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise ExplainzooError(
                f"{self.manifest_path} is unreadable ({exc}); remove the folder or use a new -o folder"
            ) from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def check(self, spec: JobSpec, extend: bool = False) -> dict[str, Any] | None:
        """The stored manifest, after checking that OUT may hold ``spec`` (nothing written).

        Raises:
            ExplainzooError: OUT holds another job (or is a non-empty folder that is not a job).
        """
        old = self.read_manifest()
        if old is None and self.root.exists() and any(self.root.iterdir()):
            raise ExplainzooError(
                f"{str(self.root)!r} is not empty and holds no manifest.json; pick a new or empty -o folder"
            )
        if old is not None:
            if old.get("schema_version") != SCHEMA_VERSION:
                raise ExplainzooError(
                    f"{str(self.root)!r} was written with results schema {old.get('schema_version')}, this "
                    f"version writes {SCHEMA_VERSION}; use a new -o folder"
                )
            diff = compare(old.get("spec", {}), spec, extend)
            if diff:
                what = ", ".join(f"{k} ({old['spec'].get(k)!r} -> {spec.identity().get(k)!r})" for k in diff)
                hint = (
                    "use a new -o folder for a new job, or rerun with the original options "
                    "(see manifest.json); --extend adds inputs, backbones or methods to this job"
                )
                raise ExplainzooError(f"{str(self.root)!r} holds a different job: {what}; {hint}")
        return old

    def open(self, spec: JobSpec, extend: bool = False) -> dict[str, Any]:
        """Create or reopen OUT for ``spec``; refuse a different job.

        Raises:
            ExplainzooError: OUT holds another job (or is a non-empty folder that is not a job).
        """
        old = self.check(spec, extend)
        self.results.mkdir(parents=True, exist_ok=True)
        for tmp in self.results.glob(".tmp-*"):  # what a killed run was writing
            tmp.unlink(missing_ok=True)
        manifest = dict(old or {})
        manifest.update({
            "schema_version": SCHEMA_VERSION,
            "spec": spec.identity(),
            "fingerprint": spec.fingerprint(),
            "versions": versions(),
            "started": manifest.get("started") or now(),
            "finished": None,
        })
        runs = list(manifest.get("runs", []))
        runs.append({"run_id": self.run_id, "engine": spec.engine, "started": now(), "finished": None})
        manifest["runs"] = runs
        self.write_manifest(manifest)
        return manifest

    # -- shards --------------------------------------------------------------
    def shards(self) -> list[Path]:
        return sorted(self.results.glob("part-*.parquet")) if self.results.exists() else []

    def done(self) -> set[tuple[str, str, str]]:
        """(path, backbone, method) of every row already stored."""
        _, pq = _pa()
        keys: set[tuple[str, str, str]] = set()
        for shard in self.shards():
            t = pq.read_table(shard, columns=list(KEY))
            keys.update(zip(*(t.column(k).to_pylist() for k in KEY)))
        return keys

    def write_shard(self, rows: list[dict[str, Any]]) -> Path | None:
        """Write ``rows`` as one new shard, atomically; returns its path."""
        if not rows:
            return None
        pa, pq = _pa()
        table = pa.Table.from_pylist(rows, schema=schema())
        return self.write_table(table)

    def write_table(self, table: Any) -> Path:
        """Write a pyarrow table (already in :func:`schema`) as one new shard."""
        _, pq = _pa()
        self._seq += 1
        path = self.results / f"part-{self.run_id}-{self._seq:05d}.parquet"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=self.results)
        os.close(fd)
        try:
            pq.write_table(table.cast(schema()), tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


class ShardBuffer:
    """Collects rows and writes a shard every ``rows`` rows (or ``max_bytes`` of maps)."""

    def __init__(self, store: Store, rows: int, max_bytes: int = 64 * 2**20) -> None:
        self.store, self.limit, self.max_bytes = store, rows, max_bytes
        self.rows: list[dict[str, Any]] = []
        self.bytes = 0
        self.written = 0
        self.failed = 0

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            self.rows.append(r)
            self.bytes += len(r.get("raw") or b"")
            self.failed += r.get("error") is not None
        if len(self.rows) >= self.limit or self.bytes >= self.max_bytes:
            self.flush()

    def add_table(self, table: Any) -> None:
        """Add rows that arrive as a pyarrow table (the Ray engine)."""
        self.add(table.to_pylist())

    def flush(self) -> None:
        if self.rows:
            self.store.write_shard(self.rows)
            self.written += len(self.rows)
        self.rows, self.bytes = [], 0


def iter_tables(root: Path) -> Iterator[Any]:
    """Each shard of ``root`` as a pyarrow table."""
    _, pq = _pa()
    for shard in sorted((root / "results").glob("part-*.parquet")):
        yield pq.read_table(shard)
