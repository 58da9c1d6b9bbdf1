"""One benchmark cell: ours (defaults and variants), every library and the baselines on one batch.

:func:`run_cell` builds the implementations, drops what cannot fit the
budgets (:mod:`benchmarks.costs`), makes the first call of each (warm-up, the
maps compared), times interleaved rounds, measures memory where a target
needs it and returns one :class:`CellResult` per configuration of ours.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import rivals as R
from .baselines import forward_backward_impl, forward_impl, repeated_fb_impl
from .config import BASELINE_KEYS, MEMORY_METHODS, Mode, timed
from .costs import estimate_s
from .memory import MemoryProbe, measure_memory
from .results import CellResult, ImplResult
from .timing import agreement, exact_heap, interleave_order, plan_rounds, synchronizer
from .variants import OURS_VARIANTS, variant_label


@dataclass
class Measured:
    """What the calls of one cell produced, per implementation key."""

    first: dict[str, Tensor] = field(default_factory=dict)  # maps of the first call
    first_t: dict[str, float] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, Tensor] = field(default_factory=dict)  # maps of the last timed call
    peaks: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def run_interleaved(impls: dict[str, R.Impl], rounds: int,
                    sync: Callable[[], None]) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """Timed rounds (ours, theirs, ...) with the start rotating each round."""
    times: dict[str, list[float]] = {k: [] for k in impls}
    last: dict[str, Tensor] = {}
    gc.collect()
    gc.disable()  # a collection inside one timed call would land on whoever ran then
    try:
        for key in interleave_order(list(impls), rounds):
            out: list[Tensor] = []
            times[key].append(timed(lambda k=key, out=out: out.append(impls[k].call()), sync))
            last[key] = out[0]
    finally:
        gc.enable()
    return times, last


def ours_impls(bb: Any, method: str, x: Tensor, targets: Tensor,
               layer: str | None) -> tuple[dict[str, R.Impl], dict[str, dict[str, Any]], dict[str, Any]]:
    """Ours with the defaults and every variant that still builds.

    Returns:
        (impls, key -> the variant's options, the default explainer's config).
    """
    from explainzoo.explainers import create_explainer

    tlist = [int(t) for t in targets.tolist()]

    def call(ex: Any) -> Callable[[], Tensor]:
        return lambda: ex.explain(bb, x, target=tlist, layer=layer).maps

    explainer = create_explainer(method)
    impls = {"ours": R.Impl("ours", type(explainer).__name__, call(explainer))}
    variants: dict[str, dict[str, Any]] = {"ours": {}}
    for options in OURS_VARIANTS.get(method, []):
        try:
            ex = create_explainer(method, **options)
        except Exception:  # noqa: BLE001 - the option went away: no variant
            continue
        key = f"ours:{variant_label(options)}"
        impls[key] = R.Impl("ours", type(ex).__name__, call(ex), note=variant_label(options))
        variants[key] = options
    return impls, variants, dict(explainer.config)


def baseline_impls(bb: Any, method: str, cell: R.Cell, uses_layer: bool) -> dict[str, R.Impl]:
    """F, F+B (methods without a layer) and S*F+B (sampling methods), timed in the cell's rounds."""
    x, targets = cell.x, cell.targets
    impls = {"F": forward_impl(bb.model, x)}
    if not uses_layer:
        impls["F+B"] = forward_backward_impl(bb.model, x, targets)
    ref = R.sampled_reference(method, cell)
    if ref is not None:
        passes, chunk = ref
        impls["S*F+B"] = repeated_fb_impl(bb.model, x, targets, passes, chunk, f"{passes}xF+B")
    return impls


def drop_unaffordable(impls: dict[str, R.Impl], ests: dict[str, float], mode: Mode,
                      skipped: dict[str, str]) -> dict[str, R.Impl]:
    """Close and drop what cannot fit, recording why in ``skipped``.

    A library estimated above the cap; ours above 4x the cap, or above the
    cell's budget when no library fits here (nothing to compare with). No
    configuration of ours left: nothing runs.
    """
    theirs_keys = [k for k in ests if not k.startswith("ours")]
    theirs_fit = [k for k in theirs_keys if ests[k] <= mode.cell_cap_s]
    for key, est in ests.items():
        cap = mode.cell_cap_s * (4 if key.startswith("ours") else 1)
        if est > cap:
            skipped[key] = f"est. {est:.0f} s per call > cap {cap:.0f} s"
        elif key.startswith("ours") and theirs_keys and not theirs_fit and est > mode.cell_budget_s:
            skipped[key] = f"est. {est:.0f} s per call and no library fits here: not timed"
        else:
            continue
        impls.pop(key).close()
    if not any(k.startswith("ours") for k in impls):
        for imp in impls.values():
            imp.close()
        return {}
    return impls


def first_calls(impls: dict[str, R.Impl], m: Measured, skipped: dict[str, str],
                mem_first: bool, device: torch.device, sync: Callable[[], None]) -> None:
    """The first call of each: warm-up, the maps compared, the cost of a round.

    A rival that fails is dropped (a result, not a crash); ours failing raises.
    With ``mem_first`` the peak memory is measured during this call.
    """
    probe = MemoryProbe(device)
    for key in list(impls):
        imp = impls[key]
        out: list[Tensor] = []
        try:
            with exact_heap() if mem_first else contextlib.nullcontext():
                probe.begin()
                m.first_t[key] = timed(lambda imp=imp, out=out: out.append(imp.call()), sync)
                if mem_first:
                    m.peaks[key] = probe.end()
        except Exception as exc:  # noqa: BLE001
            if key == "ours":
                raise
            skipped[key] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            imp.close()
            del impls[key]
            continue
        m.first[key] = out[0].detach().float().cpu()


def measure(impls: dict[str, R.Impl], method: str, mode: Mode, mem_first: bool,
            skipped: dict[str, str], device: torch.device) -> Measured:
    """First calls, timed rounds and memory of the cell's implementations."""
    m = Measured()
    sync = synchronizer(device)
    first_calls(impls, m, skipped, mem_first, device, sync)
    per_round = sum(m.first_t.values())
    if per_round > mode.single_round_s:
        # Expensive cell (tens of seconds a call): the first calls, already
        # interleaved, are the measurement; a warm-up is noise at this size.
        m.times = {k: [m.first_t[k]] for k in impls}
        m.last = dict(m.first)
    else:
        # The first calls were the warm-up; at least one timed round after them.
        low = mode.min_rounds if per_round <= mode.cell_budget_s else 1
        rounds = plan_rounds(per_round, mode.cell_budget_s, low, mode.max_rounds)
        m.times, m.last = run_interleaved(impls, rounds, sync)
    if method in MEMORY_METHODS and not mem_first and per_round <= mode.mem_budget_s:
        m.peaks = measure_memory(impls, device, sync)
    if mem_first:
        for imp in impls.values():
            imp.note = "; ".join(filter(None, [imp.note, "peak memory measured in the timed call"]))
    return m


def cell_results(bb: Any, method: str, n: int, layer: str | None, impls: dict[str, R.Impl],
                 variants: dict[str, dict[str, Any]], skipped: dict[str, str], m: Measured,
                 seconds: float, stochastic: bool) -> list[CellResult]:
    """One :class:`CellResult` per configuration of ours, sharing the rivals' and baselines'."""
    results: list[CellResult] = []
    shared = {k: imp for k, imp in impls.items() if not k.startswith("ours")}
    for okey, options in variants.items():
        label = method if not options else f"{method} [{variant_label(options)}]"
        c = CellResult(bb.name, n, label, layer, skipped=dict(skipped), error=m.error, seconds=seconds)
        c.base_method, c.variant = method, options
        if okey not in impls:
            c.error = c.error or skipped.get(okey, "not run")
            results.append(c)
            continue
        if m.error is None:
            for key, imp in [(okey, impls[okey]), *shared.items()]:
                if key not in m.times:
                    continue
                res = ImplResult(imp.library, imp.api, m.times[key], n,
                                 [m.peaks[key]] if key in m.peaks else [], note=imp.note)
                if key not in BASELINE_KEYS and key != okey:
                    res.r = agreement(m.first[okey], m.first[key])
                if stochastic and key not in BASELINE_KEYS and key in m.last:
                    res.r_self = agreement(m.first[key], m.last[key].detach().float().cpu())
                c.impls["ours" if key == okey else key] = res
        c.skipped = {k: v for k, v in skipped.items() if not k.startswith("ours") or k == okey}
        results.append(c)
    return results


def run_cell(bb: Any, method: str, x: Tensor, targets: Tensor, mode: Mode, device: torch.device,
             libraries: dict[str, str], base: dict[str, float], log: Callable[[str], None]) -> list[CellResult]:
    """Time ours (defaults and variants), every library and the baselines on one batch.

    Args:
        bb: the backbone; x, targets: the batch and the classes every implementation explains.
        base: seconds per image of F and F+B (``F_img``/``FB_img``; ``*_img8`` at the largest batch).
        log: progress lines.

    Returns:
        One :class:`CellResult` per configuration of ours; they share the
        rivals' and baselines' measurements.
    """
    from explainzoo.explainers import explainer_class

    n = x.shape[0]
    cls = explainer_class(method)
    layer = bb.resolve_layer(cls.default_layer) if cls.uses_layer else None
    t_cell = time.perf_counter()
    impls, variants, config = ours_impls(bb, method, x, targets, layer)
    rival_model = R.rival_copy(bb.model)
    cell = R.Cell(bb, rival_model, x, targets, layer or bb.resolve_layer("last"), config)
    impls.update(baseline_impls(bb, method, cell, cls.uses_layer))
    theirs, skipped = R.rival_impls(method, cell, libraries)
    impls.update({imp.library: imp for imp in theirs})
    channels = bb.layer_format(cell.layer).channels
    f_img, fb_img = base.get("F_img8", base["F_img"]), base.get("FB_img8", base["FB_img"])
    ests = {k: estimate_s(method, imp.library, cell, f_img, fb_img, channels, variants.get(k))
            for k, imp in impls.items() if k not in BASELINE_KEYS}
    impls = drop_unaffordable(impls, ests, mode, skipped)
    # Too slow for an extra memory call: measure the peak during the first (timed) call.
    mem_first = method in MEMORY_METHODS and sum(ests.values()) > mode.mem_budget_s
    m = Measured()
    try:
        m = measure(impls, method, mode, mem_first, skipped, device)
    except Exception as exc:  # noqa: BLE001
        m.error = f"{type(exc).__name__}: {exc}"
        log(f"    ERROR {method} N={n}: {m.error}")
    finally:
        for imp in impls.values():
            imp.close()
        del rival_model, cell
        gc.collect()
    stochastic = "seed" in cls.options  # a randomised method declares its seed
    return cell_results(bb, method, n, layer, impls, variants, skipped, m,
                        time.perf_counter() - t_cell, stochastic)
