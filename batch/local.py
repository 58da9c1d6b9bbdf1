"""The local engine: DataLoader workers decode, the main process explains.

Per backbone (loaded once): a :class:`torch.utils.data.DataLoader` over the
images still to do, ``workers`` decode processes (the safe loader and the
backbone's preprocessing, one torch thread each) overlapped with the model,
batches of ``batch_size`` images through every method, rows streamed to
shards. ``batch_size="auto"`` on CUDA grows the batch while it fits and halves
it on out-of-memory, retrying the same images, so none is lost.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from explainzoo.backbones import Backbone, Preprocessing

from .inputs import Item
from .spec import JobSpec, build_backbone, resolve_device
from .store import ShardBuffer, Store
from .work import Decoded, Processor, decode

#: ``auto`` on CPU: a fixed batch (the CPU gains little from larger ones).
AUTO_CPU_BATCH = 16
#: ``auto`` on CUDA: the start and the largest batch tried.
AUTO_CUDA_START, AUTO_CUDA_MAX = 8, 256


class _Images(Dataset):
    """Decodes item ``i`` in a worker: (i, :class:`Decoded`)."""

    def __init__(self, items: list[Item], pre: Preprocessing) -> None:
        self.items, self.pre = items, pre

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Decoded]:
        return i, decode(self.items[i].path, self.pre)


def _collate(batch: list[tuple[int, Decoded]]) -> list[tuple[int, Decoded]]:
    return batch


#: How much lower the decode workers' CPU priority is when the model runs on
#: the CPU (``os.nice``): decoding then takes the cores only when the model's
#: threads leave them idle, instead of stalling a parallel region of the
#: forward pass; when the model waits for images, the workers get the CPU.
WORKER_NICENESS = 10


def _init_worker(_: int, niceness: int = 0) -> None:
    torch.set_num_threads(1)
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)  # lowering one's own priority needs no privilege


class BatchSizer:
    """Runs a processor on loader batches at a fixed or adaptive batch size."""

    def __init__(self, batch_size: int | str, device: torch.device) -> None:
        self.auto = batch_size == "auto"
        if self.auto:
            cuda = device.type == "cuda"
            self.size = AUTO_CUDA_START if cuda else AUTO_CPU_BATCH
            self.max = AUTO_CUDA_MAX if cuda else AUTO_CPU_BATCH
        else:
            self.size = self.max = int(batch_size)

    @property
    def load_size(self) -> int:
        """Images per loader batch."""
        return self.max

    def run(self, proc: Processor, items: list[Item], decs: list[Decoded], pending: list[list[str]]):
        """Yield row lists for one loader batch, splitting it at the current size."""
        start = 0
        while start < len(items):
            end = min(start + self.size, len(items))
            try:
                rows = proc.rows(items[start:end], decs[start:end], pending[start:end])
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if not self.auto or self.size == 1:
                    msg = f"out of GPU memory at batch size {self.size}; use a smaller --batch-size"
                    rows = [r for i in range(start, end)
                            for r in proc.error_rows(items[i], decs[i], pending[i], msg)]
                else:
                    self.size = max(1, self.size // 2)  # retry the same images, smaller
                    continue
            else:
                if self.auto and self.size < self.max and end - start == self.size:
                    self.size = min(self.max, self.size * 2)
            start = end
            yield rows


def run_local(
    spec: JobSpec,
    store: Store,
    todo: dict[str, list[tuple[Item, list[str]]]],
    built: dict[str, Backbone],
    buffer: ShardBuffer,
    progress: Callable[[int], Any] | None = None,
) -> None:
    """Process every (item, pending methods) of every backbone; rows go to ``buffer``.

    Args:
        todo: backbone name -> the items with the methods still to do.
        built: backbones already built by validation (taken over, then freed).
    """
    device = resolve_device(spec.device)
    for name in spec.backbones:
        work = todo.get(name) or []
        if not work:
            continue
        bb = built.pop(name, None) or build_backbone(spec, name)
        proc = Processor(spec, bb, device, store.run_id, str(store.root))
        sizer = BatchSizer(spec.batch_size, device)
        items = [it for it, _ in work]
        loader = DataLoader(
            _Images(items, bb.preprocessing),
            batch_size=sizer.load_size,
            num_workers=spec.workers,
            collate_fn=_collate,
            worker_init_fn=functools.partial(_init_worker, niceness=WORKER_NICENESS if device.type == "cpu" else 0)
            if spec.workers
            else None,
            prefetch_factor=2 if spec.workers else None,
        )
        for batch in loader:
            idx = [i for i, _ in batch]
            decs = [d for _, d in batch]
            for rows in sizer.run(proc, [items[i] for i in idx], decs, [work[i][1] for i in idx]):
                buffer.add(rows)
            if progress is not None:
                progress(len(batch))
        buffer.flush()
        del proc, bb
