"""``explainzoo evaluate`` on the job machinery: a faithfulness report over a dataset.

:func:`evaluate_job` runs a resumable dataset job (:func:`~explainzoo.batch.run_batch`)
for the per-image numbers -- the deletion / insertion AUC of every map and of
seeded random maps (chance), and the pointing game when a box is given --
then :func:`evaluation_rows` turns the stored rows into the report's rows: one
:class:`~explainzoo.explainers.metrics.Row` per image x backbone x explainer,
plus a ``random`` chance row per image and backbone (the chance of the first
explainer that has a map: its target, its map's resolution).

The cascading-randomisation sanity check costs ``sanity_steps`` explainer
calls per image x backbone x explainer, so it runs on the first
``sanity_images`` images only (those whose maps exist), from the maps stored in
the job; those images also get the report's curves and overlays. Their numbers
are cached in ``JOB/evaluate.json``: a rerun into the same folder continues the
job and computes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError
from explainzoo.explainers.metrics import RANDOM, Evaluation, Row

from .api import run_batch
from .inputs import Item, collect
from .results import decode_map
from .spec import JobSpec, build_backbone, build_explainers, resolve_device
from .store import _pa, atomic_write_bytes, conform
from .work import baseline_maps, decode

__all__ = ["CACHE", "COLUMNS", "evaluate_job", "evaluation_rows", "image_names", "read_rows"]

#: The file, inside the job folder, caching the sanity numbers and curves.
CACHE = "evaluate.json"
#: The result columns the report reads (no maps).
COLUMNS = (
    "path", "backbone", "method", "weights", "layer", "target", "target_name",
    "deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random",
    "pointing", "pointing_random", "raw_shape", "input_height", "input_width", "error",
)
_MAP_COLUMNS = ("raw", "raw_scale", "map_rule")
_Key = tuple[str, str, str]


def read_rows(job: str | Path, columns: Sequence[str] = COLUMNS,
              paths: Iterable[str] | None = None) -> dict[_Key, dict[str, Any]]:
    """(path, backbone, method) -> the row's ``columns``, read shard by shard.

    Only the named columns are read (a job of 50 000 images and input-size
    maps stays small in memory unless ``raw`` is asked for); ``paths`` keeps
    those images only.
    """
    _, pq = _pa()
    wanted = list(dict.fromkeys(("path", "backbone", "method", *columns)))
    keep = list(paths) if paths is not None else None
    out: dict[_Key, dict[str, Any]] = {}
    for shard in sorted((Path(job) / "results").glob("part-*.parquet")):
        present = [c for c in wanted if c in pq.read_schema(shard).names]
        filters = [("path", "in", keep)] if keep is not None else None
        table = conform(pq.read_table(shard, columns=present, filters=filters)).select(wanted)
        for rec in table.to_pylist():
            out[(rec["path"], rec["backbone"], rec["method"])] = rec
    return out


def image_names(items: Sequence[Item]) -> dict[str, str]:
    """path -> the report's image name: its relative path, or the full path when two collide."""
    count: dict[str, int] = {}
    for it in items:
        count[it.relpath] = count.get(it.relpath, 0) + 1
    return {it.path: it.relpath if count[it.relpath] == 1 else it.path for it in items}


def _method_row(name: str, backbone: str, method: str, rec: dict[str, Any] | None, steps: int) -> Row:
    """The report's row of one stored (image, backbone, method) row."""
    row = Row(name, backbone, (rec or {}).get("weights") or "", method)
    if rec is None:
        row.error = "no result in the job (rerun to complete it)"
    elif rec["error"] is not None:
        row.error = rec["error"]
    else:
        row.layer, row.target, row.label = rec["layer"] or "", rec["target"], rec["target_name"] or ""
        row.deletion_auc, row.insertion_auc = rec["deletion_auc"], rec["insertion_auc"]
        row.pointing = rec["pointing"]
        row.forward_passes = 2 * (steps + 1)
    return row


def _random_row(name: str, backbone: str, recs: list[dict[str, Any] | None], steps: int, trials: int) -> Row:
    """The chance row of one image and backbone: the random-map numbers of its first row with a map."""
    ok = [r for r in recs if r is not None and r["error"] is None]
    weights = next((r["weights"] for r in recs if r is not None and r["weights"]), "")
    row = Row(name, backbone, weights, RANDOM)
    if not ok:
        row.error = next((r["error"] for r in recs if r is not None and r["error"]), "no map to compare with")
        return row
    r = ok[0]
    h, w = (int(v) for v in r["raw_shape"][-2:])
    row.layer = "pixel noise" if (h, w) == (r["input_height"], r["input_width"]) else f"noise {h}x{w}"
    row.target, row.label = r["target"], r["target_name"] or ""
    row.deletion_auc, row.insertion_auc = r["deletion_auc_random"], r["insertion_auc_random"]
    row.pointing = r["pointing_random"]
    row.forward_passes = 2 * trials * (steps + 1)
    return row


def evaluation_rows(job: str | Path, items: Sequence[Item], backbones: Sequence[str],
                    explainers: Sequence[str], steps: int, trials: int = 1) -> list[Row]:
    """The report's rows from a job: per backbone, per image, each explainer then ``random``.

    Args:
        job: the job folder.
        items: the images, in the report's order.
        backbones, explainers: the job's names, in the report's order.
        steps, trials: the job's metric steps and random trials (for ``forward_passes``).
    """
    recs = read_rows(job)
    names = image_names(items)
    rows: list[Row] = []
    for bb in backbones:
        for it in items:
            mine = [recs.get((it.path, bb, m)) for m in explainers]
            rows += [_method_row(names[it.path], bb, m, r, steps) for m, r in zip(explainers, mine)]
            rows.append(_random_row(names[it.path], bb, mine, steps, trials))
    return rows


@dataclass
class _Detail:
    """What the per-image details of one backbone need."""

    spec: JobSpec
    bb: Backbone
    device: torch.device
    explainers: dict[str, Any]
    recs: dict[_Key, dict[str, Any]]
    index: dict[tuple[str, str, str], Row]
    cache: dict[str, Any]
    sanity_steps: int


def _curves(bb: Backbone, x: Tensor, maps: Tensor, target: int, steps: int) -> dict[str, list[float]]:
    """Mean deletion / insertion curves of ``maps`` (T,H,W) for ``target``, and their fractions."""
    from explainzoo.explainers.metrics import deletion, insertion

    out: dict[str, list[float]] = {}
    for kind, fn in (("deletion", deletion), ("insertion", insertion)):
        probs = [fn(bb, x, maps[k:k + 1].to(x.device), [target], steps) for k in range(maps.shape[0])]
        out[kind] = torch.stack([c.probs[0] for c in probs]).mean(0).tolist()
        out["fractions"] = probs[0].fractions.tolist()
    return out


def _sanity(ctx: _Detail, method: str, x: Tensor, original: Tensor, target: int) -> list[float] | str:
    """[mean Spearman, mean SSIM] of the cascading randomisation, or the error message."""
    from explainzoo.explainers.metrics import cascading_randomization

    ex = ctx.explainers[method]
    layer = ctx.spec.layer if ex.uses_layer else None
    try:
        s = cascading_randomization(ex, ctx.bb, x, target=[target], layer=layer, steps=ctx.sanity_steps,
                                    seed=ctx.spec.seed, original=original.to(x.device))
    except ExplainzooError as exc:
        return str(exc)
    return [s.mean_spearman, s.mean_ssim]


def _random_detail(ctx: _Detail, item: Item, name: str, x: Tensor, first: tuple[dict, Tensor],
                   entry: dict[str, Any]) -> None:
    """The chance row's curves and (with sanity) random maps against the first map."""
    from explainzoo.explainers.metrics import spearman, ssim

    rec, reference = first
    res = tuple(int(v) for v in rec["raw_shape"][-2:])
    rand = baseline_maps(item.path, ctx.spec.seed, tuple(x.shape[-2:]), res, ctx.spec.random_trials)
    if RANDOM not in entry:
        entry[RANDOM] = _curves(ctx.bb, x, rand, int(rec["target"]), ctx.spec.metric_steps)
    row = ctx.index[(name, ctx.bb.name, RANDOM)]
    if ctx.sanity_steps and not row.error:
        ref = reference[None].expand_as(rand).contiguous()
        row.sanity_spearman = float(spearman(ref, rand).mean())
        row.sanity_ssim = float(ssim(ref, rand).mean())


def _detail(ctx: _Detail, ev: Evaluation, item: Item, name: str) -> None:
    """Overlays, curves and sanity numbers of one image (cached in ``ctx.cache``)."""
    dec = decode(item.path, ctx.bb.preprocessing)
    if dec.x is None:
        return
    x = dec.x[None].to(ctx.device)
    key = (name, ctx.bb.name)
    ev.inputs[key] = ctx.bb.preprocessing.unnormalize(dec.x)
    ev.maps[key] = {}
    entry = ctx.cache["curves"].setdefault(f"{item.path}|{ctx.bb.name}", {})
    first = None
    for m in ctx.spec.explainers:
        rec = ctx.recs.get((item.path, ctx.bb.name, m))
        if rec is None or rec["error"] is not None:
            continue
        mp = torch.from_numpy(np.array(decode_map(rec), dtype=np.float32))
        ev.maps[key][m] = mp
        first = first or (rec, mp)
        if m not in entry:
            entry[m] = _curves(ctx.bb, x, mp[None], int(rec["target"]), ctx.spec.metric_steps)
        if ctx.sanity_steps:
            sk = f"{item.path}|{ctx.bb.name}|{m}|{ctx.sanity_steps}"
            if sk not in ctx.cache["sanity"]:
                ctx.cache["sanity"][sk] = _sanity(ctx, m, x, mp[None], int(rec["target"]))
            val, row = ctx.cache["sanity"][sk], ctx.index[(name, ctx.bb.name, m)]
            if isinstance(val, str):
                row.error = val
            else:
                row.sanity_spearman, row.sanity_ssim = val
    if first is not None:
        _random_detail(ctx, item, name, x, first, entry)
    shown = [m for m in (*ctx.spec.explainers, RANDOM) if m in entry and (m == RANDOM or m in ev.maps[key])]
    ev.curves[key] = {m: {k: np.asarray(entry[m][k]) for k in ("deletion", "insertion")} for m in shown}
    if shown:
        ev.fractions = np.asarray(entry[shown[0]]["fractions"])


def _read_cache(path: Path) -> dict[str, Any]:
    """The cached curves and sanity numbers (empty when missing or unreadable)."""
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    return {"curves": dict(cache.get("curves", {})), "sanity": dict(cache.get("sanity", {}))}


def add_details(ev: Evaluation, spec: JobSpec, items: Sequence[Item], job: str | Path,
                sanity_steps: int, count: int) -> None:
    """Sanity numbers, curves and maps of the first ``count`` images with a map, per backbone."""
    path = Path(job) / CACHE
    cache = _read_cache(path)
    names = image_names(items)
    index = {(r.image, r.backbone, r.explainer): r for r in ev.rows}
    device = resolve_device(spec.device)
    for bname in spec.backbones:
        chosen = [it for it in items
                  if any(not index[(names[it.path], bname, m)].error for m in spec.explainers)][:count]
        if not chosen:
            continue
        recs = read_rows(job, COLUMNS + _MAP_COLUMNS, paths=[it.path for it in chosen])
        bb = build_backbone(spec, bname)
        bb.model.to(device)
        ctx = _Detail(spec, bb, device, build_explainers(spec), recs, index, cache, sanity_steps)
        for it in chosen:
            _detail(ctx, ev, it, names[it.path])
            atomic_write_bytes(path, json.dumps(cache).encode())
        del ctx, bb


def evaluate_job(
    inputs: Sequence[str] | str,
    backbones: Sequence[str] | str,
    explainers: Sequence[str] | str,
    job: str | Path,
    *,
    steps: int = 20,
    sanity_steps: int = 3,
    sanity_images: int = 1,
    trials: int = 2,
    box: Sequence[float] | str | None = None,
    seed: int = 0,
    progress: bool = False,
    **settings: Any,
) -> Evaluation:
    """Faithfulness numbers of every image x backbone x explainer, computed as a resumable job.

    Args:
        inputs: image files, folders, globs or list files (as ``explainzoo batch``).
        backbones, explainers: names (lists or comma-separated).
        job: the job folder (manifest, shards, ``evaluate.json``); rerunning continues it.
        steps: deletion / insertion steps.
        sanity_steps: cascade points of the sanity check (0: skip).
        sanity_images: images (the first ones with a map) that get the sanity
            check, the curves and the overlays.
        trials: random maps per image for the chance row.
        box: (x0, y0, x1, y1) in image pixels: adds the pointing game.
        seed: seeds the random maps and the re-initialisations.
        progress: a progress bar for the job.
        **settings: other :class:`~explainzoo.batch.JobSpec` fields (``weights``,
            ``checkpoint``, ``batch_size``, ``workers``, ``device``, ``limit``, ...).

    Raises:
        ExplainzooError: a setting out of range, or what :func:`run_batch`
            refuses before any work (missing input, unknown name, OUT holding another job).
    """
    from explainzoo.explainers.metrics.evaluation import check_settings

    check_settings(steps, sanity_steps, trials)
    if isinstance(sanity_images, bool) or not isinstance(sanity_images, int) or sanity_images < 0:
        raise ExplainzooError(f"sanity images must be an integer >= 0, got {sanity_images!r}")
    ident = dict(metrics=["deletion", "insertion"] + (["pointing"] if box is not None else []),
                 metric_steps=steps, random_trials=trials, box=box, seed=seed)
    settings.setdefault("shard_rows", 64)  # a killed run loses little metric work
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    run_batch(inputs, backbones, explainers, job, progress=progress, html=False, **ident, **settings)
    spec = JobSpec(inputs=inputs, backbones=backbones, explainers=explainers, **ident, **settings)
    items = collect(spec.inputs, spec.limit)
    ev = Evaluation(settings={
        "steps": steps, "sanity_steps": sanity_steps, "trials": trials, "seed": seed,
        "batch_size": spec.batch_size, "box": spec.box, "images": len(items), "sanity_images": sanity_images,
        "deletion": "towards 0 in normalised space (the dataset mean colour)",
        "insertion": "from a Gaussian-blurred copy (sigma 5 px)",
    })
    ev.rows = evaluation_rows(job, items, spec.backbones, spec.explainers, steps, trials)
    if sanity_images:
        add_details(ev, spec, items, job, sanity_steps, sanity_images)
    return ev
