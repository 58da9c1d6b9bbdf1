"""Benchmarks against pytorch-grad-cam, Captum and torchcam (issue #5).

    python -m benchmarks.run                # full run -> benchmarks/RESULTS.md
    python -m benchmarks.run --quick        # < 3 min smoke run -> benchmarks/RESULTS-quick.md
    python -m benchmarks.run --device cuda --backbones timm:resnet50 --methods gradcam,saliency

For every backbone x batch x method, ours and every library that has the
method are timed interleaved in this one process (ours, theirs, ours, theirs,
...), together with the baselines F (a plain forward under inference_mode)
and F+B (forward + gradient to the input). Reported: median time per image,
ours/theirs, ours/F, peak memory per call, agreement of the maps (Pearson r
after min-max normalisation), RSS growth and hooks left over many calls, and
which of the issue's targets hold.

This module is the command line; the parts are :mod:`benchmarks.cells` (one
cell), :mod:`benchmarks.costs` (what may be skipped), :mod:`benchmarks.leaks`,
:mod:`benchmarks.targets`, :mod:`benchmarks.report` and
:mod:`benchmarks.rivals` (the libraries' adapters).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from . import rivals as R  # noqa: E402
from .baselines import forward_backward_impl, forward_impl, make_batch  # noqa: E402
from .cells import run_cell  # noqa: E402
from .config import FULL, NOT_RUN, PRETRAINED, QUICK, Mode, priority, set_clock, short, timed  # noqa: E402
from .leaks import run_leaks  # noqa: E402
from .machine import limit_threads, load_snapshot, machine_info, versions  # noqa: E402
from .report import fmt_r, merge_states, write_report  # noqa: E402
from .results import CellResult  # noqa: E402
from .timing import (  # noqa: E402
    CLOCKS,
    TIMING_MMAP_THRESHOLD,
    median,
    set_mmap_threshold,
    synchronizer,
    time_interleaved,
)

HERE = Path(__file__).resolve().parent
#: (backbone, batch) -> (backbone, x, targets, seconds per image of F and F+B)
Setups = dict[tuple[str, int], tuple[Any, Tensor, Tensor, dict[str, float]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``args.argv`` keeps the arguments for the report)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (< 3 min)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--backbones", default=None, help="comma-separated zoo names")
    p.add_argument("--methods", default=None, help="comma-separated explainer names (default: all)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--out", default=None, help="Markdown file to write")
    p.add_argument("--notes", default=str(HERE / "NOTES.md"),
                   help="hand-written analysis appended to the report (default benchmarks/NOTES.md)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall (default) or cpu: process CPU time, for a shared machine (use --threads 1)")
    p.add_argument("--leak-calls", type=int, default=None)
    p.add_argument("--no-leak", action="store_true", help="skip the repeated-call memory checks")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed rounds per cell")
    p.add_argument("--cap", type=float, default=None, help="skip a rival estimated above this (s/call)")
    p.add_argument("--rerender", default=None, metavar="JSON",
                   help="rewrite the report from a run's saved .json (e.g. after editing NOTES.md)")
    p.add_argument("--merge", nargs="*", default=None, metavar="JSON",
                   help="with --rerender: cells of later focused runs replace the run's own")
    p.add_argument("--mem-budget", type=float, default=None,
                   help="measure peak memory where a round takes less than this many seconds")
    p.add_argument("--max-rounds", type=int, default=None)
    p.add_argument("--deadline", type=float, default=None,
                   help="minutes after which no new cell starts (full 28, quick 2)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def mode_for(args: argparse.Namespace) -> Mode:
    """:data:`QUICK` or :data:`FULL` with the command line's overrides."""
    mode = QUICK if args.quick else FULL
    if args.backbones:
        mode = replace(mode, backbones=tuple(b.strip() for b in args.backbones.split(",") if b.strip()))
    if args.batches:
        mode = replace(mode, batches=tuple(int(b) for b in args.batches.split(",")))
    overrides = {"cell_budget_s": args.budget, "cell_cap_s": args.cap, "leak_calls": args.leak_calls,
                 "deadline_s": args.deadline * 60 if args.deadline else None, "max_rounds": args.max_rounds}
    mode = replace(mode, **{k: v for k, v in overrides.items() if v})
    if args.mem_budget is not None:
        mode = replace(mode, mem_budget_s=args.mem_budget)
    return mode


def selected_methods(requested: str | None) -> list[str]:
    """The map explainers to run (``--methods`` or every registered one), in priority order."""
    from explainzoo.explainers import AttributionExplainer, explainer_class, list_explainers

    names = []
    for name in list_explainers():
        try:
            cls = explainer_class(name)
        except Exception:  # noqa: BLE001 - a broken plugin is not ours to benchmark
            continue
        if issubclass(cls, AttributionExplainer):
            names.append(name)
    if requested:
        want = [m.strip() for m in requested.split(",") if m.strip()]
        missing = [m for m in want if m not in names]
        if missing:
            raise SystemExit(f"unknown or non-map explainers: {missing}; have {names}")
        names = want
    return sorted(names, key=lambda m: (priority(m), m))


def rerender(args: argparse.Namespace) -> int:
    """``--rerender``: the report again from a saved state (with ``--merge``d focused runs)."""
    src = Path(args.rerender)
    out = Path(args.out) if args.out else src.with_suffix(".md")
    state = json.loads(src.read_text())
    for extra in args.merge or []:
        state = merge_states(state, json.loads(Path(extra).read_text()), Path(extra).name)
    if args.merge:  # the merged state, so the report can be rendered again later
        out.with_suffix(".json").write_text(json.dumps(state, indent=1, default=str))
    for t in write_report(state, out, args):
        print(f"target {'n/a ' if t.holds is None else 'OK  ' if t.holds else 'MISS'} {t.name}")
    print(f"wrote {out}")
    return 0


def setup_backbones(mode: Mode, device: torch.device, log: Callable[[str], None],
                    left: Callable[[], float]) -> tuple[dict[str, Any], Setups, dict]:
    """Every backbone, batch, target and baseline first, so cells can run in priority order.

    Returns:
        (name -> backbone, the setups, (backbone, batch) -> seconds per image of F and F+B).
    """
    from explainzoo.backbones import create_backbone

    setups: Setups = {}
    baselines: dict[tuple[str, int], dict[str, float]] = {}
    backbones: dict[str, Any] = {}
    sync = synchronizer(device)
    for bname in mode.backbones:
        if backbones and left() < mode.leak_reserve_s:
            log(f"{bname}: not set up (time limit)")
            continue
        bb = create_backbone(bname, pretrained=bname in PRETRAINED)
        bb.model.to(device).eval()
        bb.layers  # noqa: B018 - the probe pass, once, outside every timing
        backbones[bname] = bb
        base: dict[str, float] = {}
        for n in sorted(mode.batches, reverse=True):  # the largest batch estimates costs
            x = make_batch(bb, n, device)
            with torch.no_grad():  # not inference_mode: the targets feed autograd later
                targets = bb.model(x).argmax(dim=1)
            impls = {"F": forward_impl(bb.model, x), "F+B": forward_backward_impl(bb.model, x, targets)}
            tt = time_interleaved({k: v.call for k, v in impls.items()}, mode.baseline_rounds,
                                  warmup=1, sync=sync, clock=timed)
            b = {"F_img": median(tt["F"]) / n, "FB_img": median(tt["F+B"]) / n}
            baselines[(bname, n)] = b
            if n == max(mode.batches):
                base["F_img8"], base["FB_img8"] = b["F_img"], b["FB_img"]
            setups[(bname, n)] = (bb, x, targets, {**base, "F_img": b["F_img"], "FB_img": b["FB_img"]})
            log(f"{bname} N={n}: F {b['F_img'] * 1000:.1f} ms/img, F+B {b['FB_img'] * 1000:.1f} ms/img")
    return backbones, setups, baselines


def run_cells(mode: Mode, methods: list[str], setups: Setups, device: torch.device,
              libraries: dict[str, str], log: Callable[[str], None],
              left: Callable[[], float]) -> list[CellResult]:
    """Every method at the smallest batch first, so a deadline cuts the big batches, not methods."""
    cells: list[CellResult] = []
    order = [(m, bname, n) for n in sorted(mode.batches) for m in methods for bname in mode.backbones]
    for method, bname, n in order:
        if (bname, n) not in setups or left() < mode.leak_reserve_s:
            cells.append(CellResult(bname, n, method, None, error=NOT_RUN, base_method=method))
            continue
        bb, x, targets, base = setups[(bname, n)]
        for c in run_cell(bb, method, x, targets, mode, device, libraries, dict(base), log):
            cells.append(c)
            parts = [f"ours {c.ms('ours'):.1f}"] + [
                f"{k} {c.ms(k):.1f} ({c.vs(k):.2f}x{', ' + fmt_r(r.r) if r.r is not None else ''})"
                for k, r in c.impls.items() if k != "ours"]
            log(f"  {c.method} {short(bname)} N={n} [{c.seconds:.0f}s]: " + "; ".join(parts)
                + (f"; skipped {c.skipped}" if c.skipped else "") + (f"; {c.error}" if c.error else ""))
    cells.sort(key=lambda c: (mode.backbones.index(c.backbone), methods.index(c.base_method),
                              bool(c.variant), c.batch))
    return cells


def configure(args: argparse.Namespace) -> torch.device:
    """Clock, threads, allocator and seed of the run; the device, checked."""
    set_mmap_threshold(TIMING_MMAP_THRESHOLD)
    if args.clock == "cpu" and args.device != "cpu":
        raise SystemExit("--clock cpu measures host CPU time: use the wall clock on a GPU")
    set_clock(args.clock)
    if args.threads:
        limit_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    torch.manual_seed(0)
    return device


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or ``--rerender`` a saved one) and write the report."""
    args = parse_args(argv)
    if args.rerender:
        return rerender(args)
    mode = mode_for(args)
    device = configure(args)
    out_path = Path(args.out) if args.out else HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    t_start = time.perf_counter()
    libraries = R.available_libraries()
    methods = selected_methods(args.methods)
    load_before = load_snapshot()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    def left() -> float:
        return mode.deadline_s - (time.perf_counter() - t_start)

    vers = versions(libraries)  # at the start: the code this run imported
    log(f"{mode.name} run on {device}: backbones {list(mode.backbones)}, batches {list(mode.batches)}, "
        f"deadline {mode.deadline_s / 60:.1f} min")
    log(f"methods {methods}; libraries {libraries or 'none (install the bench extra)'}")
    log(load_before)
    backbones, setups, baselines = setup_backbones(mode, device, log, left)
    cells = run_cells(mode, methods, setups, device, libraries, log, left)
    skipped_for_time = sum(1 for c in cells if c.error == NOT_RUN)
    if skipped_for_time:
        log(f"{skipped_for_time} cells not run: time limit")
    leaks = [] if args.no_leak else run_leaks(mode, device, backbones[mode.backbones[0]], baselines,
                                              libraries, methods if args.methods else None, log, left)
    state = {
        "argv": args.argv, "mode": asdict(mode),
        "info": {**machine_info(str(device)), "finished": _dt.datetime.now().strftime("%Y-%m-%d %H:%M")},
        "versions": vers, "load_before": load_before, "load_after": load_snapshot(),
        "cells": [asdict(c) for c in cells], "leaks": [asdict(lk) for lk in leaks],
        "baselines": [[b, n, v] for (b, n), v in baselines.items()],
        "wall_s": time.perf_counter() - t_start, "skipped_for_time": skipped_for_time,
    }
    out_path.with_suffix(".json").write_text(json.dumps(state, indent=1, default=str))
    targets = write_report(state, out_path, args)
    log(f"wrote {out_path} and {out_path.with_suffix('.json').name} ({state['wall_s'] / 60:.1f} min)")
    for t in targets:
        log(f"target {'n/a ' if t.holds is None else 'OK  ' if t.holds else 'MISS'} {t.name}: {t.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
