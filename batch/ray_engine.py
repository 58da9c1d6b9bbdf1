"""The Ray engine: the same job on Ray Data, one machine or a cluster.

Per backbone: a dataset of (path, relpath, label, methods) -> ``map_batches``
decode tasks (the safe loader and the backbone's preprocessing) ->
``map_batches`` on an actor pool, one backbone per actor (``num_gpus=1`` per
actor on CUDA) -> the rows, which the driver streams into the job's atomic
shards (the same layout and manifest as the local engine). Without an address
a local Ray is started (and stopped) here; ``ray_address="auto"`` or
``"ray://head:10001"`` joins an existing cluster, whose workers must see the
input paths and, with overlays, the output folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from explainzoo.backbones import ExplainzooError, Preprocessing

from .inputs import Item
from .spec import JobSpec, build_backbone, resolve_device
from .store import ShardBuffer, Store
from .work import Decoded, Processor, decode


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ExplainzooError(f"--engine ray needs Ray: pip install 'explainzoo[ray]' ({exc})") from None
    return ray


def decode_batch(batch: dict[str, np.ndarray], pre: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray Data task: a batch of paths -> model inputs (B,3,H,W) and errors."""
    p = dict(pre)
    for key in ("input_size", "mean", "std"):
        p[key] = tuple(p[key])
    prep = Preprocessing(**p)
    decs = [decode(str(path), prep) for path in batch["path"]]
    h, w = prep.input_size
    x = np.zeros((len(decs), 3, h, w), dtype=np.float32)
    for i, d in enumerate(decs):
        if d.x is not None:
            x[i] = d.x.numpy()
    return {
        **batch,
        "x": x,
        "ok": np.array([d.x is not None for d in decs]),
        "width": np.array([d.width or 0 for d in decs], dtype=np.int32),
        "height": np.array([d.height or 0 for d in decs], dtype=np.int32),
        "error": np.array([d.error or "" for d in decs], dtype=object),
    }


class ExplainActor:
    """Ray actor: one backbone, every method; a decoded batch -> a pyarrow table of rows."""

    def __init__(self, spec: dict[str, Any], backbone: str, run_id: str, out: str) -> None:
        import torch

        job = JobSpec(**spec)
        device = resolve_device(job.device)
        if device.type == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.proc = Processor(job, build_backbone(job, backbone), device, run_id, out)

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa
        import torch

        from .store import schema

        items, decs, pending = [], [], []
        for i in range(len(batch["path"])):
            label = str(batch["label"][i]) or None
            items.append(Item(str(batch["path"][i]), str(batch["relpath"][i]), label))
            w, h = int(batch["width"][i]) or None, int(batch["height"][i]) or None
            x = torch.from_numpy(np.array(batch["x"][i], dtype=np.float32)) if batch["ok"][i] else None
            decs.append(Decoded(x, w, h, str(batch["error"][i]) or None))
            pending.append(str(batch["methods"][i]).split(","))
        rows = self.proc.rows(items, decs, pending)
        return pa.Table.from_pylist(rows, schema=schema())


def _init(ray: Any, spec: JobSpec, quiet: bool) -> bool:
    """Connect to Ray; True when this call started a local Ray (to stop it after)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if spec.ray_address:
        ray.init(address=spec.ray_address, log_to_driver=not quiet)
        return False
    cpus = max(2, spec.actors or 0)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=not quiet)
    return True


def run_ray(
    spec: JobSpec,
    store: Store,
    todo: dict[str, list[tuple[Item, list[str]]]],
    backbones: dict[str, dict[str, Any]],
    buffer: ShardBuffer,
    progress: Callable[[int], Any] | None = None,
) -> None:
    """Process the job's pending work on Ray; rows go to ``buffer`` in the driver.

    Args:
        backbones: name -> {"preprocessing": ...} (from the manifest) for the decode tasks.
    """
    ray = _ray()
    started = _init(ray, spec, quiet=progress is None)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpu = resolve_device(spec.device).type == "cuda"
        actors = spec.actors or max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
        bs = 16 if spec.batch_size == "auto" else int(spec.batch_size)
        for name in spec.backbones:
            work = todo.get(name) or []
            if not work:
                continue
            records = [{"path": it.path, "relpath": it.relpath, "label": it.label or "",
                        "methods": ",".join(ms)} for it, ms in work]
            ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records) // bs, 200)))
            # decode tasks take no CPU slot: the actors hold them all, decoding overlaps them.
            # At most one decode task per actor in flight: with no CPU slot to bound them,
            # Ray Data would otherwise start a task (a fresh Python importing torch) per
            # block at once, which on a small machine costs more than the whole job.
            ds = ds.map_batches(decode_batch, fn_kwargs={"pre": backbones[name]["preprocessing"]},
                                batch_size=bs, num_cpus=0, batch_format="numpy",
                                compute=ray.data.TaskPoolStrategy(size=actors))
            ds = ds.map_batches(
                ExplainActor,
                fn_constructor_kwargs={"spec": spec.to_dict(), "backbone": name,
                                       "run_id": store.run_id, "out": str(store.root)},
                batch_size=bs, compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0,
                batch_format="numpy",
            )
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                buffer.add_table(table)
                if progress is not None:
                    progress(len({p for p in table.column("path").to_pylist()}))
            buffer.flush()
    finally:
        if started:
            ray.shutdown()
