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
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from . import rivals as R  # noqa: E402
from .timing import (  # noqa: E402
    CLOCKS,
    TIMING_MMAP_THRESHOLD,
    agreement,
    exact_heap,
    geomean,
    leak_check,
    median,
    peak_rss_mb,
    plan_rounds,
    ratio,
    reset_peak_rss,
    rss_mb,
    set_mmap_threshold,
    synchronizer,
    time_call,
    time_interleaved,
)

HERE = Path(__file__).resolve().parent
DEFAULT_BACKBONES = (
    "timm:tf_efficientnet_lite0",
    "timm:resnet50",
    "timm:vit_small_patch16_224",
    "vgg11_ref",
)
SHORT = {
    "timm:tf_efficientnet_lite0": "EfficientNet-Lite0",
    "timm:resnet50": "ResNet-50",
    "timm:vit_small_patch16_224": "ViT-S/16",
    "vgg11_ref": "vgg11_ref",
    "timm:test_resnet": "test_resnet (tiny)",
    "timm:test_efficientnet": "test_efficientnet (tiny)",
}
PRETRAINED = {"timm:tf_efficientnet_lite0"}
#: Small enough that 200 calls of a perturbation method fit the leak budget.
TINY_BACKBONE = "timm:test_resnet"
#: Methods whose two runs differ by design (random noise / masks).
STOCHASTIC = {"smoothgrad", "rise"}
#: Known per-image cost in forward passes (F) or forward+backward passes (B).
PERTURBATION = {"scorecam", "ablationcam", "occlusion", "rise"}


@dataclass
class Mode:
    name: str
    backbones: tuple[str, ...]
    batches: tuple[int, ...]
    cell_budget_s: float  # aim for this many seconds of timed rounds per cell
    cell_cap_s: float  # skip a rival whose first call is estimated above this
    mem_budget_s: float  # measure peak memory (one extra call each) when a round costs less
    min_rounds: int
    max_rounds: int
    leak_calls: int
    leak_budget_s: float
    baseline_rounds: int
    deadline_s: float  # cells stop being started after this (minus the leak reserve)
    leak_reserve_s: float
    single_round_s: float = 30.0  # above this per round, the first calls are the measurement


FULL = Mode("full", DEFAULT_BACKBONES, (1, 8), cell_budget_s=5.0, cell_cap_s=45.0,
            mem_budget_s=60.0, min_rounds=3, max_rounds=9, leak_calls=200, leak_budget_s=12.0,
            baseline_rounds=7, deadline_s=28 * 60, leak_reserve_s=240.0)
QUICK = Mode("quick", ("timm:tf_efficientnet_lite0", TINY_BACKBONE), (1, 8), cell_budget_s=1.0,
             cell_cap_s=3.0, mem_budget_s=2.0, min_rounds=2, max_rounds=3, leak_calls=30,
             leak_budget_s=1.0, baseline_rounds=3, deadline_s=120.0, leak_reserve_s=25.0,
             single_round_s=3.0)
#: Memory is measured (one extra call per implementation) only where a target needs it.
MEMORY_METHODS = {"gradcam", "scorecam"}


# -- results -------------------------------------------------------------------


@dataclass
class ImplResult:
    library: str
    api: str
    times: list[float]
    batch: int
    peaks_mb: list[float] = field(default_factory=list)
    r: float | None = None  # agreement with ours
    r_self: float | None = None  # first vs last call (stochastic methods)
    note: str = ""

    @property
    def ms(self) -> float:
        """Median milliseconds per image."""
        return median(self.times) / self.batch * 1000

    @property
    def peak_mb(self) -> float:
        return median(self.peaks_mb) if self.peaks_mb else math.nan


@dataclass
class CellResult:
    backbone: str
    batch: int
    method: str
    layer: str | None
    impls: dict[str, ImplResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    base_method: str = ""
    variant: dict[str, Any] = field(default_factory=dict)

    def ms(self, key: str) -> float:
        res = self.impls.get(key)
        return res.ms if res else math.nan

    def vs(self, key: str) -> float:
        """ours / key (time per image)."""
        return ratio(self.ms("ours"), self.ms(key))


@dataclass
class LeakResult:
    method: str
    library: str
    backbone: str
    calls: int
    rss_growth_mb: float
    peak_growth_mb: float
    hooks_left: int | None
    per_call_ms: float
    note: str = ""


# -- machine & versions ----------------------------------------------------------


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(device: str) -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    info = {
        "cpu": f"{cpu or platform.processor()} ({os.cpu_count()} logical cores)",
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch threads": str(torch.get_num_threads()),
        "clock": _CLOCK["name"] + (" (process CPU time)" if _CLOCK["name"] == "cpu" else " (elapsed time)"),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_snapshot() -> str:
    """Load average and the busiest other processes, to judge the numbers."""
    try:
        la = os.getloadavg()
        load = f"load average {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"
    except OSError:
        load = "load average unknown"
    top = _cmd(["top", "-bn1", "-w", "160"]).splitlines()
    busy = []
    me = str(os.getpid())
    for line in top:
        parts = line.split()
        if len(parts) >= 12 and parts[0].isdigit() and parts[0] != me:
            with contextlib.suppress(ValueError):
                if float(parts[8]) >= 10.0:
                    busy.append(f"pid {parts[0]} {parts[11]} {parts[8]}% CPU")
    return load + ("; other busy processes: " + ", ".join(busy[:6]) if busy else "; no other busy process")


def versions(libraries: dict[str, str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("timm", "numpy", "explainzoo"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    for lib in R.LIBRARIES:
        out[lib] = libraries.get(lib, "not installed")
    commit = _cmd(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    if commit:
        dirty = _cmd(["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "explainers", "backbones"])
        out["explainzoo commit"] = commit + (" + uncommitted changes in explainers/backbones" if dirty else "")
    return out


# -- inputs ----------------------------------------------------------------------------


def example_images(n: int) -> list[Any]:
    """``n`` real photos from scikit-image (seeded noise images where it is missing)."""
    import numpy as np

    imgs: list[Any] = []
    with contextlib.suppress(ImportError):
        from skimage import data

        for name in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field",
                     "immunohistochemistry", "cat", "colorwheel", "camera", "coins"):
            if len(imgs) == n:
                break
            try:
                a = getattr(data, name)()
            except Exception:  # noqa: BLE001 - some need a download: skip them
                continue
            if a.ndim == 2:
                a = np.stack([a] * 3, axis=-1)
            imgs.append(a[..., :3])
    rng = np.random.default_rng(0)
    while len(imgs) < n:
        imgs.append(rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8))
    return imgs


def make_batch(bb: Any, n: int, device: torch.device) -> Tensor:
    from PIL import Image

    xs = [bb.preprocess(Image.fromarray(a)) for a in example_images(n)]
    return torch.cat(xs).to(device)


# -- baselines ---------------------------------------------------------------------------


def forward_impl(model: nn.Module, x: Tensor) -> R.Impl:
    def call() -> Tensor:
        with torch.inference_mode():
            return model(x)

    return R.Impl("F", "forward under inference_mode", call)


def forward_backward_impl(model: nn.Module, x: Tensor, targets: Tensor,
                          chunk: int | None = None, label: str = "F+B") -> R.Impl:
    """Forward + gradient of the target scores to the input, ``chunk`` images per pass."""
    def call() -> Tensor:
        grads = []
        step = chunk or x.shape[0]
        with torch.enable_grad():
            for i in range(0, x.shape[0], step):
                leaf = x[i : i + step].detach().requires_grad_(True)
                logits = model(leaf)
                score = logits.gather(1, targets[i : i + step, None]).sum()
                (g,) = torch.autograd.grad(score, leaf)
                grads.append(g)
        return torch.cat(grads)

    return R.Impl(label, "forward + autograd.grad to the input", call)


def repeated_fb_impl(model: nn.Module, x: Tensor, targets: Tensor, samples: int,
                     chunk: int | None, label: str) -> R.Impl:
    """The ideal cost of a samples-based gradient method: samples x F+B, batched."""
    n = x.shape[0]
    big = x.repeat_interleave(samples, dim=0)
    big = big + 0.1 * torch.randn_like(big)
    tg = targets.repeat_interleave(samples)
    inner = forward_backward_impl(model, big, tg, chunk=chunk or min(n * samples, 64), label=label)
    return R.Impl(label, f"{samples} x F+B on {n * samples} inputs, "
                  f"{chunk or min(n * samples, 64)} per pass", inner.call)


# -- memory probes ------------------------------------------------------------------------


class MemoryProbe:
    """Peak memory above the start of one call: RSS on CPU, allocator stats on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.start = 0.0

    def begin(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            reset_peak_rss()
            self.start = rss_mb()

    def end(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.start
        return peak_rss_mb() - self.start


# -- one cell ----------------------------------------------------------------------------

_CLOCK = {"name": "wall"}


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """One call of ``fn`` by the run's clock (``--clock``)."""
    return time_call(fn, sync, now=CLOCKS[_CLOCK["name"]])

BASELINE_KEYS = ("F", "F+B", "S*F+B")


def run_interleaved(impls: dict[str, R.Impl], rounds: int,
                    sync: Callable[[], None]) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """Timed rounds (ours, theirs, ...) with the start rotating each round."""
    from .timing import interleave_order

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


def measure_memory(impls: dict[str, R.Impl], device: torch.device, sync: Callable[[], None]) -> dict[str, float]:
    """Peak memory above the start of one call of each (after the timed rounds)."""
    probe = MemoryProbe(device)
    peaks = {}
    for key, imp in impls.items():
        with exact_heap():
            probe.begin()
            imp.call()
            sync()
            peaks[key] = probe.end()
    return peaks


def estimate_s(method: str, library: str, cell: R.Cell, f_img: float, fb_img: float,
               channels: int, options: dict[str, Any] | None = None) -> float:
    """A-priori seconds for one call, to skip what cannot fit (rough on purpose).

    Only the methods that run many passes are estimated; the rest are cheap.
    """
    n = cell.x.shape[0]
    cfg = {**cell.ours_config, **(options or {})}
    if method == "scorecam":
        k = channels
        if library == "ours" and cfg.get("max_channels"):
            k = min(channels, int(cfg["max_channels"]))
        return n * k * f_img
    if method == "ablationcam":
        if library == "ours" and cfg.get("trunk_once", True):
            return n * (f_img + channels * f_img * 0.05)  # only the layers above the target
        return n * channels * f_img
    if method == "occlusion":
        s = R.occlusion_settings(cell)
        h, w = cell.input_hw
        count = ((h - s["window"]) // s["stride"] + 2) * ((w - s["window"]) // s["stride"] + 2)
        return n * count * f_img
    if method == "rise":
        return n * int(cfg.get("masks", 64)) * f_img
    if method == "smoothgrad":
        return n * R.smoothgrad_settings(cell)["samples"] * fb_img
    if method == "integrated_gradients":
        return n * R.ig_settings(cell)["steps"] * fb_img
    return 0.0


def run_cell(bb: Any, method: str, x: Tensor, targets: Tensor, mode: Mode, device: torch.device,
             libraries: dict[str, str], base: dict[str, float], log: Callable[[str], None]) -> list[CellResult]:
    """Time ours (defaults and variants), every library and the baselines on one batch.

    Returns one :class:`CellResult` per configuration of ours; they share the
    rivals' and baselines' measurements.
    """
    from explainzoo.explainers import create_explainer, explainer_class

    n = x.shape[0]
    cls = explainer_class(method)
    explainer = create_explainer(method)
    layer = bb.resolve_layer(cls.default_layer) if cls.uses_layer else None
    t_cell = time.perf_counter()
    tlist = [int(t) for t in targets.tolist()]
    sync = synchronizer(device)

    def ours(ex: Any) -> Callable[[], Tensor]:
        return lambda: ex.explain(bb, x, target=tlist, layer=layer).maps

    impls: dict[str, R.Impl] = {"ours": R.Impl("ours", type(explainer).__name__, ours(explainer))}
    variants: dict[str, dict[str, Any]] = {"ours": {}}
    for options in R.OURS_VARIANTS.get(method, []):
        try:
            ex = create_explainer(method, **options)
        except Exception:  # noqa: BLE001 - the option went away: no variant
            continue
        key = f"ours:{R.variant_label(options)}"
        impls[key] = R.Impl("ours", type(ex).__name__, ours(ex), note=R.variant_label(options))
        variants[key] = options
    rival_model = R.rival_copy(bb.model)
    cell = R.Cell(bb, rival_model, x, targets, layer or bb.resolve_layer("last"), dict(explainer.config))
    # Baselines in the same rounds, so ours/F comes from the same interleaving.
    impls["F"] = forward_impl(bb.model, x)
    if not cls.uses_layer:
        impls["F+B"] = forward_backward_impl(bb.model, x, targets)
    if method == "smoothgrad":
        s = R.smoothgrad_settings(cell)
        impls["S*F+B"] = repeated_fb_impl(bb.model, x, targets, s["samples"], s["batch"],
                                          f"{s['samples']}xF+B")
    elif method == "integrated_gradients":
        s = R.ig_settings(cell)
        impls["S*F+B"] = repeated_fb_impl(bb.model, x, targets, s["steps"], s["batch"],
                                          f"{s['steps']}xF+B")
    theirs, skipped = R.rival_impls(method, cell, libraries)
    for imp in theirs:
        impls[imp.library] = imp

    channels = bb.layer_format(cell.layer).channels
    f_img, fb_img = base.get("F_img8", base["F_img"]), base.get("FB_img8", base["FB_img"])
    first: dict[str, Tensor] = {}
    first_t: dict[str, float] = {}
    error = None
    times: dict[str, list[float]] = {}
    last: dict[str, Tensor] = {}
    peaks: dict[str, float] = {}
    # What cannot fit: a library estimated above the cap; ours above 4x the cap, or
    # above the cell's budget when no library fits here (nothing to compare with).
    ests = {k: estimate_s(method, imp.library, cell, f_img, fb_img, channels, variants.get(k))
            for k, imp in impls.items() if k not in BASELINE_KEYS}
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
        impls = {}
    # Too slow for an extra memory call: measure the peak during the first (timed) call.
    mem_first = method in MEMORY_METHODS and sum(ests.values()) > mode.mem_budget_s
    probe = MemoryProbe(device)
    try:
        # First call of each: warm-up, the maps compared, and the cost of a round.
        for key in list(impls):
            imp = impls[key]
            out: list[Tensor] = []
            try:
                with exact_heap() if mem_first else contextlib.nullcontext():
                    probe.begin()
                    first_t[key] = timed(lambda imp=imp, out=out: out.append(imp.call()), sync)
                    if mem_first:
                        peaks[key] = probe.end()
            except Exception as exc:  # noqa: BLE001 - a rival failing is a result, not a crash
                if key == "ours":
                    raise
                skipped[key] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                imp.close()
                del impls[key]
                continue
            first[key] = out[0].detach().float().cpu()
        per_round = sum(first_t.values())
        if per_round > mode.single_round_s:
            # Expensive cell (tens of seconds a call): the first calls, already
            # interleaved, are the measurement; a warm-up is noise at this size.
            times = {k: [first_t[k]] for k in impls}
            last = dict(first)
        else:
            # The first calls were the warm-up; at least one timed round after them.
            low = mode.min_rounds if per_round <= mode.cell_budget_s else 1
            rounds = plan_rounds(per_round, mode.cell_budget_s, low, mode.max_rounds)
            times, last = run_interleaved(impls, rounds, sync)
        if method in MEMORY_METHODS and not mem_first and per_round <= mode.mem_budget_s:
            peaks = measure_memory(impls, device, sync)
        if mem_first:
            for imp in impls.values():
                imp.note = "; ".join(filter(None, [imp.note, "peak memory measured in the timed call"]))
    except Exception as exc:  # noqa: BLE001
        error = f"{type(exc).__name__}: {exc}"
        log(f"    ERROR {method} N={n}: {error}")
    finally:
        for imp in impls.values():
            imp.close()
        del rival_model, cell
        gc.collect()
    seconds = time.perf_counter() - t_cell

    results: list[CellResult] = []
    shared = {k: imp for k, imp in impls.items() if not k.startswith("ours")}
    for okey, options in variants.items():
        label = method if not options else f"{method} [{R.variant_label(options)}]"
        c = CellResult(bb.name, n, label, layer, skipped=dict(skipped), error=error, seconds=seconds)
        c.base_method, c.variant = method, options
        if okey not in impls:
            c.error = c.error or skipped.get(okey, "not run")
            results.append(c)
            continue
        if error is None:
            for key, imp in [(okey, impls[okey]), *shared.items()]:
                if key not in times:
                    continue
                res = ImplResult(imp.library, imp.api, times[key], n,
                                 [peaks[key]] if key in peaks else [], note=imp.note)
                if key not in BASELINE_KEYS and key != okey:
                    res.r = agreement(first[okey], first[key])
                if method in STOCHASTIC and key not in BASELINE_KEYS and key in last:
                    res.r_self = agreement(first[key], last[key].detach().float().cpu())
                c.impls["ours" if key == okey else key] = res
        c.skipped = {k: v for k, v in skipped.items() if not k.startswith("ours") or k == okey}
        results.append(c)
    return results


# -- leak checks ---------------------------------------------------------------------------


def leak_for(method: str, library: str, bb: Any, x: Tensor, targets: Tensor, calls: int,
             budget_s: float, libraries: dict[str, str]) -> LeakResult:
    """RSS growth and hooks left over ``calls`` calls of one implementation."""
    from explainzoo.backbones import hook_counts
    from explainzoo.explainers import create_explainer, explainer_class

    cls = explainer_class(method)
    explainer = create_explainer(method)
    layer = bb.resolve_layer(cls.default_layer) if cls.uses_layer else None
    tlist = [int(t) for t in targets.tolist()]
    imp = None
    if library == "ours":
        def fn() -> object:
            return explainer.explain(bb, x, target=tlist, layer=layer)

        def hooks() -> int:
            return sum(hook_counts(bb.model).values())
    else:
        model = R.rival_copy(bb.model)
        cell = R.Cell(bb, model, x, targets, layer or bb.resolve_layer("last"), dict(explainer.config))
        impls, _ = R.rival_impls(method, cell, libraries)
        imp = next(i for i in impls if i.library == library)
        fn = imp.call

        def hooks() -> int:
            return 0  # a library's extractor holds its hooks until closed; not our contract

    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    # budget_s > 0 (quick mode): fewer calls where they do not fit; else exactly ``calls``
    n_calls = int(min(calls, max(10, budget_s // max(once, 1e-6)))) if budget_s > 0 else calls
    warm = 10 if library == "pytorch-grad-cam" else 3
    rep = leak_check(fn, n_calls, warmup=warm, hooks=hooks)
    if imp is not None:
        imp.close()
    note = "" if n_calls == calls else f"{n_calls} calls fit the budget"
    return LeakResult(method, library, bb.name, rep.calls, rep.rss_growth_mb, rep.peak_growth_mb,
                      rep.hooks_left if library == "ours" else None, rep.per_call_s * 1000, note)


# -- targets ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    holds: bool | None  # None: not measured
    detail: str


def _fmt_ratio(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.3f}x" if v < 0.1 else f"{v:.2f}x"


def _worst(items: list[tuple[float, str]], limit: float, higher_bad: bool = True) -> tuple[bool | None, str]:
    items = [(v, w) for v, w in items if math.isfinite(v)]
    if not items:
        return None, "not measured"
    worst = max(items) if higher_bad else min(items)
    bad = [w for v, w in items if (v > limit if higher_bad else v < limit)]
    ok = not bad
    text = f"worst {worst[0]:.3f} ({worst[1]})" if higher_bad else f"worst {worst[0]:.5f} ({worst[1]})"
    if bad:
        text += f"; misses: {', '.join(bad[:8])}" + (" ..." if len(bad) > 8 else "")
    return ok, text


def evaluate_targets(cells: list[CellResult], leaks: list[LeakResult]) -> list[Target]:
    out: list[Target] = []
    ok_cells = [c for c in cells if not c.error]

    def where(c: CellResult) -> str:
        return f"{SHORT.get(c.backbone, c.backbone)} N={c.batch}"

    gcams = [c for c in ok_cells if c.method in R.GRADIENT_CAMS]
    # <= 1.15 x F (ResNet-50: <= 1.05 x F)
    items = []
    for c in gcams:
        lim = 1.05 if c.backbone == "timm:resnet50" else 1.15
        items.append((c.vs("F") / lim, f"{c.method} {where(c)} {c.vs('F'):.2f}xF"))
    holds, text = _worst(items, 1.0)
    out.append(Target("Gradient CAMs <= 1.15 x F (ResNet-50 <= 1.05 x F)", holds,
                      text.replace("worst ", "worst (ratio/limit) ")))
    items = [(c.vs("pytorch-grad-cam"), f"{c.method} {where(c)}") for c in gcams]
    holds, text = _worst(items, 0.4)
    out.append(Target("Gradient CAMs <= 0.4 x pytorch-grad-cam", holds, text))
    items = []
    for c in gcams:
        fastest = min((c.ms(k) for k in ("captum", "torchcam") if k in c.impls), default=math.nan)
        if math.isfinite(fastest) and fastest > 1.2 * c.ms("F"):
            items.append((ratio(c.ms("ours"), fastest), f"{c.method} {where(c)}"))
    holds, text = _worst(items, 0.9)
    out.append(Target("Gradient CAMs <= 0.9 x fastest of Captum/torchcam (where it is > 1.2 x F)",
                      holds, text))
    items = [(c.vs("captum"), where(c)) for c in ok_cells if c.method == "saliency"]
    holds, text = _worst(items, 1.0)
    out.append(Target("Saliency <= 1.0 x Captum Saliency", holds, text))
    def adaptive(c: CellResult) -> bool:
        return c.base_method == "integrated_gradients" and c.variant.get("rule", "adaptive") == "adaptive"

    items = [(c.vs("S*F+B"), f"{c.method} {where(c)}") for c in ok_cells
             if c.base_method in ("smoothgrad", "integrated_gradients") and not adaptive(c)]
    holds, text = _worst(items, 1.05)
    rest = [c.vs("S*F+B") for c in ok_cells if adaptive(c) and math.isfinite(c.vs("S*F+B"))]
    if rest:
        text += (f"; not held: IG's adaptive default (one-node refinement rounds, see the notes) "
                 f"{geomean(rest):.2f}x (worst {max(rest):.2f}x)")
    out.append(Target("SmoothGrad / Integrated Gradients (uniform rules) <= 1.05 x (samples x F+B), batched",
                      holds, text))
    # Score-CAM, per configuration of ours: >= 2x faster at r >= 0.999, memory <= torchcam
    for label in dict.fromkeys(c.method for c in ok_cells if c.base_method == "scorecam"):
        items, agree, mem = [], [], []
        documented = 0
        for c in (c for c in ok_cells if c.method == label):
            rivals_ms = [c.ms(k) for k in ("pytorch-grad-cam", "torchcam") if k in c.impls]
            if rivals_ms:
                items.append((ratio(c.ms("ours"), min(rivals_ms)), where(c)))
            for k in ("pytorch-grad-cam", "torchcam"):
                if k in c.impls and c.impls[k].r is not None:
                    if R.known_difference(c.base_method, c.variant, k, c.backbone):
                        documented += 1
                    else:
                        agree.append((c.impls[k].r, f"{k} {where(c)}"))
            if "torchcam" in c.impls:
                po, pt = c.impls["ours"].peak_mb, c.impls["torchcam"].peak_mb
                mem.append((po - pt, f"{where(c)} ours {po:.0f} MB vs torchcam {pt:.0f} MB"))
        holds, text = _worst(items, 0.5)
        out.append(Target(f"{label}: >= 2x faster than the faster of pytorch-grad-cam / torchcam "
                          "(ours/faster <= 0.5)", holds, text))
        holds, text = _worst(agree, 0.999, higher_bad=False)
        if documented:
            text += f"; {documented} pairs with a documented difference not counted"
        out.append(Target(f"{label}: agreement r >= 0.999", holds, text))
        holds, text = _worst(mem, 0.0)
        out.append(Target(f"{label}: peak memory <= torchcam's (MB difference)", holds, text))
    items = [(c.vs("pytorch-grad-cam"), where(c)) for c in ok_cells if c.method == "ablationcam"]
    holds, text = _worst(items, 0.5)
    out.append(Target("Ablation-CAM >= 2x faster than pytorch-grad-cam", holds, text))
    ours_leaks = [lk for lk in leaks if lk.library == "ours"]
    holds, text = _worst([(lk.rss_growth_mb, f"{lk.method} on {SHORT.get(lk.backbone, lk.backbone)}"
                           f" ({lk.calls} calls)") for lk in ours_leaks], 20.0)
    out.append(Target("RSS growth < 20 MB over 200 calls (ours, every method)", holds, text))
    holds, text = _worst([(float(lk.hooks_left or 0), lk.method) for lk in ours_leaks], 0.0)
    out.append(Target("zero hooks left after the calls (ours)", holds, text))
    agree, excused = [], 0
    for c in ok_cells:
        for k, res in c.impls.items():
            if res.r is None:
                continue
            if R.known_difference(c.base_method, c.variant, k, c.backbone):
                excused += 1
                continue
            agree.append((res.r, f"{c.method}/{k} {where(c)}"))
    holds, text = _worst(agree, 0.99, higher_bad=False)
    out.append(Target("agreement r >= 0.99 with each library where the method is the same",
                      holds, text + f"; {excused} pairs with a documented difference not counted"))
    return out


# -- report --------------------------------------------------------------------------------


def _ms(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _mb(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.0f}"


def _r(v: float | None) -> str:
    if v is None:
        return ""
    return "r n/a" if not math.isfinite(v) else f"r {v:.4f}" if v < 0.9999 else "r 1.0000"


def render(args: argparse.Namespace, mode: Mode, info: dict[str, str], vers: dict[str, str],
           load_before: str, load_after: str, cells: list[CellResult], leaks: list[LeakResult],
           targets: list[Target], baselines: dict[tuple[str, int], dict[str, float]],
           wall_s: float, notes: str, skipped_for_time: int = 0,
           merged: list[dict[str, Any]] | None = None) -> str:
    libs = [lib for lib in R.LIBRARIES]
    L: list[str] = []
    L.append("# Benchmarks: explainzoo vs pytorch-grad-cam, Captum, torchcam")
    L.append("")
    L.append(f"Generated by `python -m benchmarks.run {' '.join(shlex.quote(a) for a in args.argv)}`"
             f" ({mode.name} mode), finished {info.get('finished', '?')}, "
             f"{wall_s / 60:.1f} min. Regenerate with `make bench` (full) or `make bench-quick`.")
    L.append("")
    L.append("Times are medians per image over interleaved rounds in one process (ours, theirs, "
             "ours, theirs, ... with the start rotating), so ratios are comparable even on a "
             "loaded machine; absolute times are not. `ours/X` < 1 means ours is faster. "
             "F = plain forward under `inference_mode`, F+B = forward + gradient to the input, both "
             "timed in the same rounds as the method. r = agreement of the maps with ours "
             "(Pearson r after per-image min-max normalisation, worst image of the batch).")
    L.append("")
    for m in merged or []:
        L.append(f"Cells re-measured by a focused run replace this run's: `python -m benchmarks.run "
                 f"{' '.join(shlex.quote(a) for a in m['argv'])}` ({m['cells']} cells, explainzoo "
                 f"commit {m.get('commit', '?')}, finished {m['finished']}; {m['load_before']}).")
        L.append("")
    if skipped_for_time:
        L.append(f"**Incomplete:** {skipped_for_time} cells did not run within the time limit "
                 f"({mode.deadline_s / 60:.1f} min; the issue's target methods and N=1 run first). "
                 "They are marked `not run` below.")
        L.append("")
    L.append("## Machine and versions")
    L.append("")
    for k, v in info.items():
        if k != "finished":
            L.append(f"- {k}: {v}")
    L.append(f"- load before the run: {load_before}")
    L.append(f"- load after the run: {load_after}")
    L.append("- " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    L.append("")
    L.append("## Targets (issue #5)")
    L.append("")
    L.append("| target | holds | measured |")
    L.append("|---|---|---|")
    for t in targets:
        mark = "n/a" if t.holds is None else "**yes**" if t.holds else "**NO**"
        L.append(f"| {t.name} | {mark} | {t.detail} |")
    L.append("")
    # summary rows per method
    L.append("## Summary per method (all backbones and batches)")
    L.append("")
    L.append("Geometric mean / worst of the per-cell ratios; min r over all cells. ref = F+B for "
             "input-gradient methods, samples x F+B for SmoothGrad / Integrated Gradients.")
    L.append("")
    L.append("| method | cells | ours/F gmean (worst) | ours/ref gmean (worst) | "
             + " | ".join(f"ours/{lib} gmean (worst), min r" for lib in libs) + " |")
    L.append("|---|---|---|---|" + "---|" * len(libs))
    methods = list(dict.fromkeys(c.method for c in cells))
    for m in methods:
        cs = [c for c in cells if c.method == m and not c.error and "ours" in c.impls]
        if not cs:
            continue
        vf = [c.vs("F") for c in cs]
        row = f"| {m} | {len(cs)} | {_fmt_ratio(geomean(vf))} ({_fmt_ratio(max(vf))}) |"
        vr = [c.vs("S*F+B" if "S*F+B" in c.impls else "F+B") for c in cs
              if "S*F+B" in c.impls or "F+B" in c.impls]
        row += f" {_fmt_ratio(geomean(vr))} ({_fmt_ratio(max(vr))}) |" if vr else " – |"
        for lib in libs:
            vs = [c.vs(lib) for c in cs if lib in c.impls]
            rs = [c.impls[lib].r for c in cs if lib in c.impls and c.impls[lib].r is not None]
            if not vs:
                row += " – |"
                continue
            rmin = min((r for r in rs if math.isfinite(r)), default=math.nan)
            row += f" {_fmt_ratio(geomean(vs))} ({_fmt_ratio(max(vs))}), {_r(rmin)} |"
        L.append(row)
    L.append("")
    L.append("## Baselines (ms per image)")
    L.append("")
    L.append("| backbone | N | F | F+B | F+B / F |")
    L.append("|---|---|---|---|---|")
    for (bname, n), b in baselines.items():
        L.append(f"| {SHORT.get(bname, bname)} | {n} | {_ms(b['F_img'] * 1000)} | "
                 f"{_ms(b['FB_img'] * 1000)} | {_fmt_ratio(b['FB_img'] / b['F_img'])} |")
    L.append("")
    L.append("## Per backbone")
    L.append("")
    L.append("Each library cell: ms per image, ours/theirs, agreement r. `runs` = timed calls per "
             "implementation; `peak` = median peak memory above the start of a call (RSS on CPU).")
    for bname in dict.fromkeys(c.backbone for c in cells):
        L.append("")
        layer = next((c.layer for c in cells if c.backbone == bname and c.layer), "")
        L.append(f"### {SHORT.get(bname, bname)} (`{bname}`, CAM layer `{layer}`)")
        L.append("")
        L.append("| method | N | F | ref | ours | ours/F | ours/ref | ours peak MB | "
                 + " | ".join(libs) + " | runs |")
        L.append("|---|---|---|---|---|---|---|---|" + "---|" * len(libs) + "---|")
        for c in [c for c in cells if c.backbone == bname]:
            if c.error or "ours" not in c.impls:
                L.append(f"| {c.method} | {c.batch} | | | error: {c.error or c.skipped.get('ours', '')} |"
                         + " |" * (4 + len(libs)) + " |")
                continue
            ref_key = "S*F+B" if "S*F+B" in c.impls else "F+B" if "F+B" in c.impls else None
            ref = c.impls[ref_key] if ref_key else None
            ref_txt = f"{_ms(ref.ms)} ({ref.api.split(' ')[0] if ref_key == 'S*F+B' else 'F+B'})" \
                if ref else "–"
            if ref_key == "S*F+B":
                ref_txt = f"{_ms(ref.ms)} ({c.impls[ref_key].library})"
            row = (f"| {c.method} | {c.batch} | {_ms(c.ms('F'))} | {ref_txt} | **{_ms(c.ms('ours'))}** | "
                   f"{_fmt_ratio(c.vs('F'))} | {_fmt_ratio(c.vs(ref_key)) if ref_key else '–'} | "
                   f"{_mb(c.impls['ours'].peak_mb)} |")
            for lib in libs:
                if lib in c.impls:
                    res = c.impls[lib]
                    txt = f"{_ms(res.ms)}: **{_fmt_ratio(c.vs(lib))}**, {_r(res.r)}"
                    if res.r_self is not None:
                        txt += f" (self {_r(res.r_self)})"
                    if res.peaks_mb:
                        txt += f", peak {_mb(res.peak_mb)} MB"
                    row += f" {txt} |"
                elif lib in c.skipped:
                    row += f" skipped: {c.skipped[lib]} |"
                else:
                    row += " – |"
            runs = len(c.impls["ours"].times)
            row += f" {runs} |"
            L.append(row)
        notes_here = [c for c in cells if c.backbone == bname]
        extra = []
        for c in notes_here:
            for k, why in c.skipped.items():
                if k not in R.LIBRARIES or "not installed" in why:
                    extra.append(f"{c.method} N={c.batch}: {k} not run ({why})")
            for k, res in c.impls.items():
                if res.note and k in R.LIBRARIES:
                    extra.append(f"{c.method}: {k} {res.api}: {res.note}")
                why = R.known_difference(c.base_method, c.variant, k, c.backbone) if res.r is not None else None
                if why:
                    extra.append(f"{c.method} vs {k}: different by design: {why}")
        if extra:
            L.append("")
            for e in dict.fromkeys(extra):
                L.append(f"- {e}")
    L.append("")
    L.append("## Memory over repeated calls")
    L.append("")
    L.append("RSS growth = RSS after the calls minus before (after warm-up and a garbage "
             "collection); peak = highest RSS during the calls minus the start. Hooks left: "
             "`explainzoo.backbones.hook_counts(model)` after minus before (ours only; the "
             "libraries keep their hooks until their extractor is released, which the adapters do).")
    L.append("")
    L.append("| method | impl | backbone | calls | RSS growth MB | peak MB | hooks left | ms/call | note |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for lk in leaks:
        L.append(f"| {lk.method} | {lk.library} | {SHORT.get(lk.backbone, lk.backbone)} | {lk.calls} | "
                 f"{lk.rss_growth_mb:+.1f} | {lk.peak_growth_mb:.0f} | "
                 f"{'' if lk.hooks_left is None else lk.hooks_left} | {lk.per_call_ms:.0f} | {lk.note} |")
    if notes.strip():
        L.append("")
        L.append(notes.strip())
    L.append("")
    return "\n".join(L)


# -- main ----------------------------------------------------------------------------------


def limit_threads(n: int) -> None:
    """Every thread pool of the process to ``n``: torch's, BLAS/OpenMP's (numpy, used by
    pytorch-grad-cam's Eigen-CAM) and OpenCV's (its resize), so no library gets more
    cores than another."""
    torch.set_num_threads(n)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    with contextlib.suppress(ImportError, AttributeError):
        import cv2

        cv2.setNumThreads(n)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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


def selected_methods(requested: str | None) -> list[str]:
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
    # the issue's targets first (cheapest first), then the rest, then anything new
    order = [*R.GRADIENT_CAMS, "saliency", "smoothgrad", "integrated_gradients", "ablationcam",
             "scorecam", *R.RIVALS]
    return sorted(names, key=lambda m: (order.index(m) if m in order else len(order), m))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
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
    mode = QUICK if args.quick else FULL
    if args.backbones:
        mode = replace(mode, backbones=tuple(b.strip() for b in args.backbones.split(",") if b.strip()))
    if args.batches:
        mode = replace(mode, batches=tuple(int(b) for b in args.batches.split(",")))
    if args.budget:
        mode = replace(mode, cell_budget_s=args.budget)
    if args.cap:
        mode = replace(mode, cell_cap_s=args.cap)
    if args.leak_calls:
        mode = replace(mode, leak_calls=args.leak_calls)
    if args.deadline:
        mode = replace(mode, deadline_s=args.deadline * 60)
    if args.mem_budget is not None:
        mode = replace(mode, mem_budget_s=args.mem_budget)
    if args.max_rounds:
        mode = replace(mode, max_rounds=args.max_rounds)
    set_mmap_threshold(TIMING_MMAP_THRESHOLD)
    if args.clock == "cpu" and args.device != "cpu":
        raise SystemExit("--clock cpu measures host CPU time: use the wall clock on a GPU")
    _CLOCK["name"] = args.clock
    if args.threads:
        limit_threads(args.threads)
    out_path = Path(args.out) if args.out else HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    torch.manual_seed(0)

    from explainzoo.backbones import create_backbone

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
    sync = synchronizer(device)

    # 1. Every backbone, batch, target and baseline first (so the cells below
    #    can run in priority order across backbones).
    setups: dict[tuple[str, int], tuple[Any, Tensor, Tensor, dict[str, float]]] = {}
    baselines: dict[tuple[str, int], dict[str, float]] = {}
    backbones: dict[str, Any] = {}
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

    # 2. The cells, the issue's targets first; what the deadline leaves out is reported.
    cells: list[CellResult] = []
    # Every method at the smallest batch first, so a deadline cuts the big batches, not methods.
    order = [(m, bname, n) for n in sorted(mode.batches) for m in methods for bname in mode.backbones]
    for method, bname, n in order:
        if (bname, n) not in setups or left() < mode.leak_reserve_s:
            cells.append(CellResult(bname, n, method, None, error="not run: time limit of the run",
                                    base_method=method))
            continue
        bb, x, targets, base = setups[(bname, n)]
        for c in run_cell(bb, method, x, targets, mode, device, libraries, dict(base), log):
            cells.append(c)
            parts = [f"ours {c.ms('ours'):.1f}"] + [
                f"{k} {c.ms(k):.1f} ({c.vs(k):.2f}x{', ' + _r(r.r) if r.r is not None else ''})"
                for k, r in c.impls.items() if k != "ours"]
            log(f"  {c.method} {SHORT.get(bname, bname)} N={n} [{c.seconds:.0f}s]: " + "; ".join(parts)
                + (f"; skipped {c.skipped}" if c.skipped else "") + (f"; {c.error}" if c.error else ""))
    skipped_for_time = sum(1 for c in cells if c.error == "not run: time limit of the run")
    if skipped_for_time:
        log(f"{skipped_for_time} cells not run: time limit")
    cells.sort(key=lambda c: (mode.backbones.index(c.backbone), methods.index(c.base_method),
                              bool(c.variant), c.batch))

    # 3. Repeated calls: RSS growth and hooks left.
    leaks: list[LeakResult] = []
    if not args.no_leak:
        leaks = run_leaks(mode, device, backbones[mode.backbones[0]], baselines, libraries,
                          methods if args.methods else None, log, left)

    state = {
        "argv": args.argv, "mode": asdict(mode),
        "info": {**machine_info(str(device)), "finished": _dt.datetime.now().strftime("%Y-%m-%d %H:%M")},
        "versions": vers, "load_before": load_before, "load_after": load_snapshot(),
        "cells": [asdict(c) for c in cells], "leaks": [asdict(lk) for lk in leaks],
        "baselines": [[b, n, v] for (b, n), v in baselines.items()],
        "wall_s": time.perf_counter() - t_start, "skipped_for_time": skipped_for_time,
    }
    out_path.with_suffix(".json").write_text(json.dumps(state, indent=1, default=str))
    targets_ = write_report(state, out_path, args)
    log(f"wrote {out_path} and {out_path.with_suffix('.json').name} ({state['wall_s'] / 60:.1f} min)")
    for t in targets_:
        log(f"target {'n/a ' if t.holds is None else 'OK  ' if t.holds else 'MISS'} {t.name}: {t.detail}")
    return 0


def merge_states(base: dict[str, Any], extra: dict[str, Any], name: str) -> dict[str, Any]:
    """``base`` with the cells (and leak checks) of a later focused run put in place of its own."""
    key = lambda c: (c["backbone"], c["batch"], c["method"])  # noqa: E731
    # a measured cell replaces any; a skipped one (with its reason) replaces only a cell that never ran
    new = {key(c): c for c in extra["cells"]}

    def pick(c: dict[str, Any]) -> dict[str, Any]:
        later = new.pop(key(c), None)
        if later is None or (later.get("error") and c.get("error") != "not run: time limit of the run"):
            return c
        return later

    cells = [pick(c) for c in base["cells"]] + list(new.values())
    lk_new = {(lk["method"], lk["library"]): lk for lk in extra["leaks"]}
    leaks = [lk_new.pop((lk["method"], lk["library"]), lk) for lk in base["leaks"]] + list(lk_new.values())
    merged = dict(base, cells=cells, leaks=leaks)
    merged["merged"] = [*base.get("merged", []), {
        "file": name, "argv": extra["argv"], "cells": len(extra["cells"]),
        "commit": extra["versions"].get("explainzoo commit", "?"),
        "load_before": extra["load_before"], "finished": extra["info"].get("finished", "?")}]
    seen = {(b, n) for b, n, _ in base["baselines"]}
    merged["baselines"] = base["baselines"] + [x for x in extra["baselines"] if (x[0], x[1]) not in seen]
    return merged


def write_report(state: dict[str, Any], out_path: Path, args: argparse.Namespace) -> list[Target]:
    """Evaluate the targets and write the Markdown report from a run's saved state."""
    cells = []
    for c in state["cells"]:
        impls = {k: ImplResult(**v) for k, v in c.pop("impls").items()}
        cells.append(CellResult(**c, impls=impls))
    leaks = [LeakResult(**lk) for lk in state["leaks"]]
    baselines = {(b, n): v for b, n, v in state["baselines"]}
    mode = Mode(**{**state["mode"], "backbones": tuple(state["mode"]["backbones"]),
                   "batches": tuple(state["mode"]["batches"])})
    prio = [*R.GRADIENT_CAMS, "saliency", "smoothgrad", "integrated_gradients", "ablationcam",
            "scorecam", *R.RIVALS]

    def order(c: CellResult) -> tuple:
        b = mode.backbones.index(c.backbone) if c.backbone in mode.backbones else len(mode.backbones)
        m = prio.index(c.base_method) if c.base_method in prio else len(prio)
        return (b, m, c.base_method, bool(c.variant), c.method, c.batch)

    cells.sort(key=order)
    targets_ = evaluate_targets(cells, leaks)
    notes_path = Path(args.notes) if args.notes else None
    notes = notes_path.read_text() if notes_path and notes_path.is_file() and mode.name == "full" else ""
    args.argv = state["argv"]
    not_run = sum(1 for c in cells if c.error == "not run: time limit of the run")
    text = render(args, mode, state["info"], state["versions"], state["load_before"],
                  state["load_after"], cells, leaks, targets_, baselines, state["wall_s"], notes,
                  not_run, state.get("merged", []))
    out_path.write_text(text)
    return targets_


def run_leaks(mode: Mode, device: torch.device, small: Any, baselines: dict, libraries: dict[str, str],
              only: list[str] | None, log: Callable[[str], None], left: Callable[[], float]) -> list[LeakResult]:
    """``mode.leak_calls`` calls of every explainer (and the libraries' Grad-CAM)."""
    from explainzoo.backbones import create_backbone
    from explainzoo.explainers import list_explainers

    x1 = make_batch(small, 1, device)
    with torch.no_grad():
        t1 = small.model(x1).argmax(dim=1)
    b = baselines.get((small.name, 1)) or next(iter(baselines.values()))
    tiny: tuple[Any, Tensor, Tensor] | None = None
    leaks: list[LeakResult] = []
    names = [m for m in list_explainers() if only is None or m in only]
    for method in names:
        if left() <= 0:
            log(f"leak {method}: not run (time limit)")
            continue
        bb, x, t = small, x1, t1
        cfg = _config(method)
        probe_cell = R.Cell(small, small.model, x1, t1, small.resolve_layer("last"), cfg)
        est = estimate_s(method, "ours", probe_cell, b["F_img"], b["FB_img"],
                         small.layer_format(probe_cell.layer).channels)
        if est * mode.leak_calls > mode.leak_budget_s:
            if tiny is None:  # at 64 x 64: what leaks does not depend on the input size
                tb = create_backbone(TINY_BACKBONE)
                tb.model.to(device).eval()
                xt = torch.nn.functional.interpolate(make_batch(tb, 1, device), size=(64, 64),
                                                     mode="bilinear", antialias=True)
                with torch.no_grad():
                    tiny = (tb, xt, tb.model(xt).argmax(dim=1))
            bb, x, t = tiny
        try:
            lk = leak_for(method, "ours", bb, x, t, mode.leak_calls,
                          mode.leak_budget_s if mode.name == "quick" else 0.0, libraries)
        except Exception as exc:  # noqa: BLE001
            log(f"leak {method}: ERROR {type(exc).__name__}: {exc}")
            continue
        if tiny is not None and bb is tiny[0]:
            lk.note = "; ".join(filter(None, [lk.note, "64x64 input"]))
        leaks.append(lk)
        log(f"leak {method} ({SHORT.get(bb.name, bb.name)}, {lk.calls} calls): RSS {lk.rss_growth_mb:+.1f} MB, "
            f"peak {lk.peak_growth_mb:.0f} MB, hooks left {lk.hooks_left}")
    if only is None or "gradcam" in only:
        for lib in (lib for lib in R.RIVALS["gradcam"] if lib in libraries):
            if left() <= 0:
                break
            try:
                lk = leak_for("gradcam", lib, small, x1, t1, mode.leak_calls,
                              mode.leak_budget_s if mode.name == "quick" else 0.0, libraries)
            except Exception as exc:  # noqa: BLE001
                log(f"leak gradcam/{lib}: ERROR {type(exc).__name__}: {exc}")
                continue
            leaks.append(lk)
            log(f"leak gradcam/{lib} ({lk.calls} calls): RSS {lk.rss_growth_mb:+.1f} MB")
    return leaks


def _config(method: str) -> dict[str, Any]:
    from explainzoo.explainers import create_explainer

    try:
        return dict(create_explainer(method).config)
    except Exception:  # noqa: BLE001
        return {}


if __name__ == "__main__":
    sys.exit(main())
