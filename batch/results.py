"""Reading a job back: :func:`load_results` and the :class:`Results` it returns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from explainzoo.backbones import ExplainzooError

from .store import SCHEMA_VERSION, _pa, conform, schema
from .work import RULE_MAP, RULE_TEMPLATE, template_rule


def decode_map(row: Mapping[str, Any]) -> np.ndarray:
    """A row's map at input resolution, (H,W) float32 in [0,1], from the stored bytes.

    The stored raw map (float16, scaled by ``raw_scale``) goes through the
    explainer template's own rule: bilinear upsampling to the input size
    (``align_corners=False``), then the per-image [0,1] rule (divide by the max
    when non-negative, else min-max), the same functions the template calls.

    Raises:
        ExplainzooError: the row is an error row (no map).
    """
    import torch

    upsample, normalize = template_rule()
    if row.get("raw") is None:
        raise ExplainzooError(f"this row has no map: {row.get('error') or 'no data'}")
    shape = tuple(int(v) for v in row["raw_shape"])
    arr = np.frombuffer(row["raw"], dtype="<f2").reshape(shape).astype(np.float32)
    if row.get("map_rule") == RULE_MAP:
        return arr
    if row.get("map_rule") != RULE_TEMPLATE:
        raise ExplainzooError(f"unknown map rule {row.get('map_rule')!r}; upgrade explainzoo to read this job")
    t = torch.from_numpy(arr * np.float32(row.get("raw_scale") or 1.0))[None]
    size = (int(row["input_height"]), int(row["input_width"]))
    return normalize(upsample(t, size))[0].numpy()


def raw_map(row: Mapping[str, Any]) -> np.ndarray:
    """A row's raw map at layer resolution (float32, the explainer's units, float16 precision)."""
    shape = tuple(int(v) for v in row["raw_shape"])
    arr = np.frombuffer(row["raw"], dtype="<f2").reshape(shape).astype(np.float32)
    return arr * np.float32(row.get("raw_scale") or 1.0)


@dataclass
class Results:
    """The rows of a job folder (read once, lazily).

    Attributes:
        root: the OUT folder.
        manifest: the parsed ``manifest.json``.
    """

    root: Path
    manifest: dict[str, Any]

    @cached_property
    def table(self):
        """All rows as one :class:`pyarrow.Table` (the shards concatenated)."""
        pa, pq = _pa()
        shards = sorted((self.root / "results").glob("part-*.parquet"))
        if not shards:
            return schema().empty_table()
        return pa.concat_tables([conform(pq.read_table(s)) for s in shards])

    @cached_property
    def frame(self):
        """All rows as a :class:`pandas.DataFrame`."""
        return self.table.to_pandas()

    def __len__(self) -> int:
        return self.table.num_rows

    def _row(self, row: Any) -> Mapping[str, Any]:
        if isinstance(row, int | np.integer):
            return self.frame.iloc[int(row)]
        if hasattr(row, "get"):
            return row
        raise ExplainzooError(f"expected a row (DataFrame row, dict or index), got {type(row).__name__}")

    def map(self, row: Any) -> np.ndarray:
        """The map of ``row`` (a frame row, a dict, or a row number) at input resolution, (H,W) float32."""
        return decode_map(self._row(row))

    def raw(self, row: Any) -> np.ndarray:
        """The raw map of ``row`` at layer resolution, float32."""
        return raw_map(self._row(row))

    def errors(self):
        """The error rows (path, backbone, method, error)."""
        f = self.frame
        return f.loc[f["error"].notna(), ["path", "backbone", "method", "error"]]

    def summary(self):
        """Per backbone x method: images, failed, accuracy, mean probability, AUCs, ms per image.

        Returns:
            A :class:`pandas.DataFrame` with one row per (backbone, method).
            ``accuracy`` is over images with a known label; AUC columns are NaN
            when the job ran without ``--metrics``.
        """
        import pandas as pd

        f = self.frame
        out = []
        for (bb, m), g in f.groupby(["backbone", "method"], sort=False):
            ok = g[g["error"].isna()]
            labelled = ok["correct"].dropna()
            rec = {
                "backbone": bb, "method": m, "images": len(g), "failed": int(g["error"].notna().sum()),
                "accuracy": float(labelled.astype(float).mean()) if len(labelled) else float("nan"),
                "probability": float(ok["probability"].mean()) if len(ok) else float("nan"),
            }
            for col in ("deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random"):
                rec[col] = float(ok[col].mean()) if ok[col].notna().any() else float("nan")
            rec["ms_per_image"] = float(ok["time_ms"].mean()) if len(ok) else float("nan")
            out.append(rec)
        return pd.DataFrame(out)


def load_results(out: str | Path) -> Results:
    """Open a job folder written by :func:`explainzoo.batch.run_batch`.

    Only complete shards are read (a running or killed job's partial file
    has a temporary name).

    Raises:
        ExplainzooError: no job there, or one of another schema version.
    """
    root = Path(out)
    path = root / "manifest.json"
    if not path.exists():
        raise ExplainzooError(f"no job in {str(root)!r} (no manifest.json); run `explainzoo batch ... -o {root}`")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ExplainzooError(
            f"{str(root)!r} has results schema {manifest.get('schema_version')}; this explainzoo reads "
            f"{SCHEMA_VERSION}: use the matching explainzoo version"
        )
    return Results(root, manifest)
