"""Repeated calls: RSS growth and hooks left after many calls of each implementation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import rivals as R
from .baselines import make_batch
from .config import TINY_BACKBONE, Mode, short
from .costs import estimate_s
from .results import LeakResult
from .timing import leak_check


def _ours_call(method: str, bb: Any, x: Tensor, targets: Tensor) -> Callable[[], object]:
    from explainzoo.explainers import create_explainer, explainer_class

    cls = explainer_class(method)
    explainer = create_explainer(method)
    layer = bb.resolve_layer(cls.default_layer) if cls.uses_layer else None
    tlist = [int(t) for t in targets.tolist()]
    return lambda: explainer.explain(bb, x, target=tlist, layer=layer)


def leak_for(method: str, library: str, bb: Any, x: Tensor, targets: Tensor, calls: int,
             budget_s: float, libraries: dict[str, str]) -> LeakResult:
    """RSS growth and hooks left over ``calls`` calls of one implementation.

    Args:
        budget_s: > 0 (quick mode): fewer calls (at least 10) where ``calls`` do not fit.
    """
    from explainzoo.backbones import hook_counts
    from explainzoo.explainers import explainer_class

    imp = None
    if library == "ours":
        fn = _ours_call(method, bb, x, targets)

        def hooks() -> int:
            return sum(hook_counts(bb.model).values())
    else:
        cls = explainer_class(method)
        layer = bb.resolve_layer(cls.default_layer) if cls.uses_layer else bb.resolve_layer("last")
        cell = R.Cell(bb, R.rival_copy(bb.model), x, targets, layer, _config(method))
        imp = next(i for i in R.rival_impls(method, cell, libraries)[0] if i.library == library)
        fn = imp.call

        def hooks() -> int:
            return 0  # a library's extractor holds its hooks until closed; not our contract

    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    n_calls = int(min(calls, max(10, budget_s // max(once, 1e-6)))) if budget_s > 0 else calls
    rep = leak_check(fn, n_calls, warmup=10 if library == "pytorch-grad-cam" else 3, hooks=hooks)
    if imp is not None:
        imp.close()
    note = "" if n_calls == calls else f"{n_calls} calls fit the budget"
    return LeakResult(method, library, bb.name, rep.calls, rep.rss_growth_mb, rep.peak_growth_mb,
                      rep.hooks_left if library == "ours" else None, rep.per_call_s * 1000, note)


def _tiny_setup(device: torch.device) -> tuple[Any, Tensor, Tensor]:
    """The tiny backbone at 64 x 64: what leaks does not depend on the input size."""
    from explainzoo.backbones import create_backbone

    tb = create_backbone(TINY_BACKBONE)
    tb.model.to(device).eval()
    xt = torch.nn.functional.interpolate(make_batch(tb, 1, device), size=(64, 64),
                                         mode="bilinear", antialias=True)
    with torch.no_grad():
        return tb, xt, tb.model(xt).argmax(dim=1)


def run_leaks(mode: Mode, device: torch.device, small: Any, baselines: dict, libraries: dict[str, str],
              only: list[str] | None, log: Callable[[str], None], left: Callable[[], float]) -> list[LeakResult]:
    """``mode.leak_calls`` calls of every explainer (and the libraries' Grad-CAM).

    A method whose calls would not fit ``mode.leak_budget_s`` on ``small`` runs
    on the tiny backbone instead (noted in the result).
    """
    from explainzoo.explainers import list_explainers

    x1 = make_batch(small, 1, device)
    with torch.no_grad():
        t1 = small.model(x1).argmax(dim=1)
    b = baselines.get((small.name, 1)) or next(iter(baselines.values()))
    budget = mode.leak_budget_s if mode.name == "quick" else 0.0
    tiny: tuple[Any, Tensor, Tensor] | None = None
    leaks: list[LeakResult] = []
    for method in (m for m in list_explainers() if only is None or m in only):
        if left() <= 0:
            log(f"leak {method}: not run (time limit)")
            continue
        bb, x, t = small, x1, t1
        probe_cell = R.Cell(small, small.model, x1, t1, small.resolve_layer("last"), _config(method))
        est = estimate_s(method, "ours", probe_cell, b["F_img"], b["FB_img"],
                         small.layer_format(probe_cell.layer).channels)
        if est * mode.leak_calls > mode.leak_budget_s:
            tiny = tiny or _tiny_setup(device)
            bb, x, t = tiny
        try:
            lk = leak_for(method, "ours", bb, x, t, mode.leak_calls, budget, libraries)
        except Exception as exc:  # noqa: BLE001
            log(f"leak {method}: ERROR {type(exc).__name__}: {exc}")
            continue
        if tiny is not None and bb is tiny[0]:
            lk.note = "; ".join(filter(None, [lk.note, "64x64 input"]))
        leaks.append(lk)
        log(f"leak {method} ({short(bb.name)}, {lk.calls} calls): RSS {lk.rss_growth_mb:+.1f} MB, "
            f"peak {lk.peak_growth_mb:.0f} MB, hooks left {lk.hooks_left}")
    if only is None or "gradcam" in only:
        for lib in (lib for lib in R.RIVALS["gradcam"] if lib in libraries):
            if left() <= 0:
                break
            try:
                lk = leak_for("gradcam", lib, small, x1, t1, mode.leak_calls, budget, libraries)
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
