"""Backbone x explainer faithfulness reports (gradio-free).

:func:`evaluate` runs the metrics of :mod:`explainzoo.explainers.metrics`
(deletion / insertion AUC, the cascading-randomisation sanity check, the
pointing game) for every image x backbone x explainer, plus a random-map
chance row per backbone; :func:`write_report` turns the result into a
self-contained HTML page (inline base64 PNGs) and a CSV. :func:`evaluate_one`
is the piece the demo's Evaluate tab needs: one image in, table rows and a
curve figure out.

Cost per image x backbone (S = steps, K = sanity steps, T = random trials):
each explainer costs one explainer call, ``2*(S+1)`` forward passes for the
curves and ``K`` explainer calls for the sanity check; the random row costs
``2*T*(S+1)`` forward passes.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError
from explainzoo.explainers import create_explainer
from explainzoo.explainers.metrics import (
    MAX_CASCADE_STEPS,
    MAX_STEPS,
    cascading_randomization,
    deletion,
    insertion,
    pointing_game,
    random_maps,
    spearman,
    ssim,
)

__all__ = [
    "CSV_FIELDS",
    "Evaluation",
    "Row",
    "curve_figure",
    "evaluate",
    "evaluate_one",
    "faithfulness_caption",
    "summary",
    "write_report",
]

RANDOM = "random"
#: The columns of the CSV, in order.
CSV_FIELDS = (
    "image", "backbone", "weights", "explainer", "layer", "target", "label",
    "deletion_auc", "insertion_auc", "sanity_spearman", "sanity_ssim", "pointing",
    "forward_passes", "error",
)


@dataclass
class Row:
    """The numbers for one image x backbone x explainer (``explainer`` "random": chance)."""

    image: str
    backbone: str
    weights: str
    explainer: str
    layer: str = ""
    target: int | None = None
    label: str = ""
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    sanity_spearman: float | None = None
    sanity_ssim: float | None = None
    pointing: float | None = None
    forward_passes: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CSV_FIELDS}


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured.

    Attributes:
        rows: one :class:`Row` per image x backbone x explainer (plus "random").
        curves: (image, backbone) -> explainer -> {"deletion": (S+1,), "insertion": (S+1,)}
            probabilities (the random entry is the mean over trials).
        overlays: (image, backbone) -> explainer -> PIL overlay.
        fractions: (S+1,) fraction of pixels removed / revealed.
        settings: the parameters used (steps, sanity steps, trials, seed, box).
    """

    rows: list[Row] = field(default_factory=list)
    curves: dict[tuple[str, str], dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    overlays: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fractions: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _box_mask(bb: Backbone, image: Any, box: Sequence[float]) -> Tensor:
    """A box in the original image's pixels -> (H,W) bool mask at the model input."""
    from explainzoo.backbones.preprocess import image_to_tensor

    t = image_to_tensor(image)
    h, w = t.shape[-2:]
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ExplainzooError(f"box {tuple(box)!r} is empty: need x1 > x0 and y1 > y0")
    m = np.zeros((h, w, 3), dtype=np.uint8)
    m[max(0, math.floor(y0)) : math.ceil(y1), max(0, math.floor(x0)) : math.ceil(x1)] = 255
    if not m.any():
        raise ExplainzooError(f"box {tuple(box)!r} lies outside the {w}x{h} image")
    return bb.preprocessing.resize_crop(m)[0] > 0.5


def _layer_resolution(bb: Backbone) -> tuple[int, int] | None:
    try:
        fmt = bb.probe.formats.get(bb.layers.get("last", ""))
    except Exception:  # noqa: BLE001 - an odd model just gets pixel-wise noise
        return None
    return tuple(fmt.size) if fmt is not None else None  # type: ignore[return-value]


def _check(steps: int, sanity_steps: int, trials: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise ExplainzooError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
    if not 0 <= sanity_steps <= MAX_CASCADE_STEPS:
        raise ExplainzooError(f"sanity steps must be in 0..{MAX_CASCADE_STEPS}, got {sanity_steps}")
    if trials < 1:
        raise ExplainzooError(f"random trials must be >= 1, got {trials}")


def evaluate(
    images: Sequence[tuple[str, Any]],
    backbones: Sequence[Backbone],
    explainers: Sequence[str],
    steps: int = 20,
    sanity_steps: int = 3,
    trials: int = 2,
    box: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Evaluation:
    """Measure every image x backbone x explainer (see the module docstring for the cost).

    Args:
        images: (name, image) pairs; an image is anything ``preprocess`` takes.
        backbones: the backbones to compare.
        explainers: registry names of map explainers (grid explainers are an error row).
        steps: deletion / insertion steps (at most ``MAX_STEPS``).
        sanity_steps: cascade points of the sanity check; 0 skips it.
        trials: random maps per image for the chance row.
        box: (x0, y0, x1, y1) in the original images' pixels: adds the pointing game.
        seed: seeds the random maps and the re-initialisations.
        progress: called with a short description after each unit of work
            (``len(images) * len(backbones) * (len(explainers) + 1)`` units).
        options: explainer name -> its options (e.g. the demo's capped ones);
            explainers not named here run with their defaults.
    """
    _check(steps, sanity_steps, trials)
    if not images or not backbones or not explainers:
        raise ExplainzooError("evaluate needs at least one image, one backbone and one explainer")
    from explainzoo.explainers.render import overlay

    methods = [create_explainer(m, **dict((options or {}).get(m, {}))) for m in explainers]
    ev = Evaluation(settings={
        "steps": steps, "sanity_steps": sanity_steps, "trials": trials, "seed": seed,
        "box": list(box) if box is not None else None,
        "deletion": "towards 0 in normalised space (the dataset mean colour)",
        "insertion": "from a Gaussian-blurred copy (sigma 5 px)",
    })
    for bb in backbones:
        res = _layer_resolution(bb)
        for name, image in images:
            shown = bb.preprocessing.resize_crop(image)
            x = bb.preprocessing.normalize(shown)[None].float()
            mask = _box_mask(bb, image, box) if box is not None else None
            key = (name, bb.name)
            ev.curves[key], ev.overlays[key] = {}, {}
            target: Tensor | None = None
            reference: Tensor | None = None
            for ex_name, ex in zip(explainers, methods):
                row = Row(name, bb.name, bb.weights, ex_name)
                try:
                    exp = ex.explain(bb, x)
                    if exp.maps is None or exp.targets is None:
                        raise ExplainzooError(f"{ex_name} returns a grid, not a map: nothing to evaluate")
                    target = exp.targets if target is None else target
                    if reference is None:
                        reference = exp.maps
                    t = int(exp.targets[0])
                    row.layer, row.target, row.label = exp.layer or "", t, bb.labels[t]
                    d = deletion(bb, x, exp.maps, exp.targets, steps, batch_size=batch_size)
                    i = insertion(bb, x, exp.maps, exp.targets, steps, batch_size=batch_size)
                    ev.fractions = d.fractions.numpy()
                    row.deletion_auc, row.insertion_auc = d.mean_auc, i.mean_auc
                    row.forward_passes = d.forward_passes + i.forward_passes
                    ev.curves[key][ex_name] = {
                        "deletion": d.probs[0].numpy(), "insertion": i.probs[0].numpy()
                    }
                    ev.overlays[key][ex_name] = overlay(shown, exp)
                    if sanity_steps:
                        s = cascading_randomization(
                            ex, bb, x, target=exp.targets, steps=sanity_steps, seed=seed,
                            original=exp.maps,
                        )
                        row.sanity_spearman, row.sanity_ssim = s.mean_spearman, s.mean_ssim
                    if mask is not None:
                        row.pointing = float(pointing_game(exp.maps, mask=mask).float().mean())
                except ExplainzooError as exc:
                    row.error = str(exc)
                ev.rows.append(row)
                if progress:
                    progress(f"{bb.name} {name} {ex_name}")
            ev.rows.append(_random_row(ev, key, bb, x, target, res, steps, trials, seed, batch_size,
                                       mask, reference, sanity_steps > 0))
            if progress:
                progress(f"{bb.name} {name} random")
    return ev


def _random_row(
    ev: Evaluation, key: tuple[str, str], bb: Backbone, x: Tensor, target: Tensor | None,
    res: tuple[int, int] | None, steps: int, trials: int, seed: int, batch_size: int,
    mask: Tensor | None, reference: Tensor | None, sanity: bool,
) -> Row:
    row = Row(key[0], bb.name, bb.weights, RANDOM, layer=f"noise {res[0]}x{res[1]}" if res else "pixel noise")
    try:
        dels, ins, pts, rhos, ssims = [], [], [], [], []
        for k in range(trials):
            rm = random_maps(1, tuple(x.shape[-2:]), res, seed=seed * 1000 + k)
            d = deletion(bb, x, rm, target, steps, batch_size=batch_size)
            i = insertion(bb, x, rm, target, steps, batch_size=batch_size)
            target = d.targets
            dels.append(d.probs[0])
            ins.append(i.probs[0])
            row.forward_passes += d.forward_passes + i.forward_passes
            if mask is not None:
                pts.append(float(pointing_game(rm, mask=mask)[0]))
            if reference is not None and sanity:
                rhos.append(float(spearman(reference, rm)[0]))
                ssims.append(float(ssim(reference, rm)[0]))
        dc, ic = torch.stack(dels).mean(0), torch.stack(ins).mean(0)
        fr = d.fractions
        ev.fractions = fr.numpy()
        row.deletion_auc = float(torch.trapezoid(dc, fr))
        row.insertion_auc = float(torch.trapezoid(ic, fr))
        assert target is not None
        row.target = int(target[0])
        row.label = bb.labels[row.target]
        ev.curves[key][RANDOM] = {"deletion": dc.numpy(), "insertion": ic.numpy()}
        if pts:
            row.pointing = float(np.mean(pts))
        if rhos:
            row.sanity_spearman, row.sanity_ssim = float(np.mean(rhos)), float(np.mean(ssims))
    except ExplainzooError as exc:
        row.error = str(exc)
    return row


# --------------------------------------------------------------------------- summaries


def summary(ev: Evaluation) -> list[dict[str, Any]]:
    """Rows averaged over images, one per backbone x explainer (random last per backbone)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in ev.rows:
        groups.setdefault((r.backbone, r.explainer), []).append(r)
    out = []
    order = sorted(groups, key=lambda k: (list(dict.fromkeys(r.backbone for r in ev.rows)).index(k[0]),
                                          k[1] == RANDOM))
    for bname, ex in order:
        rows = groups[(bname, ex)]

        def mean(attr: str, rows: list[Row] = rows) -> float | None:
            vals = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
            return float(np.mean(vals)) if vals else None

        out.append({
            "backbone": bname, "weights": rows[0].weights, "explainer": ex, "images": len(rows),
            "deletion_auc": mean("deletion_auc"), "insertion_auc": mean("insertion_auc"),
            "sanity_spearman": mean("sanity_spearman"), "sanity_ssim": mean("sanity_ssim"),
            "pointing": mean("pointing"),
            "errors": "; ".join(sorted({r.error for r in rows if r.error})),
        })
    return out


def _png(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def curve_figure(
    curves: dict[str, dict[str, np.ndarray]], fractions: np.ndarray, title: str = ""
):
    """Deletion and insertion curves side by side -> PIL image (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(8, 3.2), dpi=90)
    FigureCanvasAgg(fig)
    for j, kind in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, j + 1)
        for name, c in curves.items():
            y = np.asarray(c[kind], dtype=np.float64)
            auc = float(((y[1:] + y[:-1]) / 2 * np.diff(fractions)).sum())
            style = dict(color="grey", linestyle="--") if name == RANDOM else {}
            ax.plot(fractions, c[kind], label=f"{name} ({auc:.3f})", **style)
        ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "revealed"))
        ax.set_ylabel("p(class)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def write_report(ev: Evaluation, outdir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``metrics.csv`` into ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "metrics.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in ev.rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.as_dict().items()})
    cols = ("backbone", "weights", "explainer", "images", "deletion_auc", "insertion_auc",
            "sanity_spearman", "sanity_ssim", "pointing", "errors")
    heads = ("backbone", "weights", "explainer", "images", "deletion AUC ↓", "insertion AUC ↑",
             "sanity Spearman ↓", "sanity SSIM ↓", "pointing ↑", "errors")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>explainzoo evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}tr.random{color:#777;"
        "font-style:italic}img{margin:2px}figure{display:inline-block;margin:4px;text-align:center;"
        "font-size:12px}</style></head><body>",
        "<h1>Which map can you trust?</h1>",
        "<p>Deletion / insertion: Petsiuk et al., RISE, 2018 "
        "(<a href='https://arxiv.org/abs/1806.07421'>arXiv:1806.07421</a>); sanity check: "
        "cascading model randomisation, Adebayo et al., 2018 "
        "(<a href='https://arxiv.org/abs/1810.03292'>arXiv:1810.03292</a>) &mdash; mean Spearman / "
        "SSIM between the original map and the maps of the progressively randomised model (lower: the "
        "map depends on the weights, as it should). The <i>random</i> row is chance: smooth seeded "
        "noise at the last layer's resolution; its sanity columns compare the first explainer's map "
        "with a random map (what full decorrelation looks like).</p>",
        f"<p>Settings: {html.escape(str(ev.settings))}</p>",
        "<h2>Summary (mean over images)</h2><table><tr>"
        + "".join(f"<th>{h}</th>" for h in heads) + "</tr>",
    ]
    for s in summary(ev):
        cls = " class='random'" if s["explainer"] == RANDOM else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(s[c])}</td>" for c in cols) + "</tr>")
    parts.append("</table><h2>Per image</h2>")
    fractions = ev.fractions if ev.fractions is not None else np.linspace(0, 1, 2)
    for key, curves in ev.curves.items():
        name, bname = key
        parts.append(f"<h3>{html.escape(name)} &middot; {html.escape(bname)}</h3><div>")
        for ex, img in ev.overlays.get(key, {}).items():
            r = next((r for r in ev.rows if (r.image, r.backbone, r.explainer) == (name, bname, ex)), None)
            cap = f"{html.escape(ex)}<br>del {_fmt(r.deletion_auc)} / ins {_fmt(r.insertion_auc)}" if r else ex
            parts.append(f"<figure><img width='160' src='{_png(img)}'><figcaption>{cap}</figcaption></figure>")
        parts.append("</div>")
        if curves:
            parts.append(f"<img src='{_png(curve_figure(curves, fractions, f'{name} / {bname}'))}'>")
        errs = [r for r in ev.rows if (r.image, r.backbone) == key and r.error]
        for r in errs:
            parts.append(f"<p style='color:#a00'>{html.escape(r.explainer)}: {html.escape(r.error)}</p>")
    parts.append("</body></html>")
    html_path = out / "report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")
    return html_path, csv_path


# --------------------------------------------------------------------------- the demo's piece


def evaluate_one(
    image: Any,
    backbones: Sequence[Backbone],
    explainers: Sequence[str],
    steps: int = 20,
    sanity_steps: int = 0,
    trials: int = 1,
    box: Sequence[float] | None = None,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], Any]:
    """One image -> (table rows, curve figure as a PIL image) for the demo's Evaluate tab.

    ``steps`` is clamped to ``MAX_STEPS`` and ``sanity_steps`` to
    ``MAX_CASCADE_STEPS`` (server-side caps). Each row is a dict with the
    keys of :func:`summary`; the figure shows the first backbone's curves
    (one line per explainer, the random chance dashed) with the AUCs in the
    legend.
    """
    steps = max(1, min(int(steps), MAX_STEPS))
    sanity_steps = max(0, min(int(sanity_steps), MAX_CASCADE_STEPS))
    ev = evaluate([("image", image)], backbones, explainers, steps=steps, sanity_steps=sanity_steps,
                  trials=trials, box=box, seed=seed)
    rows = summary(ev)
    key = ("image", backbones[0].name)
    fractions = ev.fractions if ev.fractions is not None else np.linspace(0, 1, steps + 1)
    fig = curve_figure(ev.curves.get(key, {}), fractions, backbones[0].name)
    return rows, fig


def faithfulness_caption(
    backbone: Backbone,
    x: Tensor,
    exp: Any,
    steps: int = 16,
    trials: int = 1,
    seed: int = 0,
) -> str:
    """A one-line caption for a map shown in the demo: its AUCs next to chance.

    E.g. ``"deletion AUC 0.331 (random 0.379, lower is better) · insertion AUC
    0.195 (random 0.173, higher is better)"``. ``steps`` is clamped to
    ``MAX_STEPS``. Cost: ``2*(steps+1)*(1+trials)`` images through the model.
    The random maps are smooth noise at the resolution of ``exp.raw``.
    """
    if exp.maps is None:
        raise ExplainzooError(f"{exp.method} returns a grid, not a map: no faithfulness caption")
    steps = max(1, min(int(steps), MAX_STEPS))
    from explainzoo.explainers.metrics import random_baseline

    d = deletion(backbone, x, exp.maps, exp.targets, steps)
    i = insertion(backbone, x, exp.maps, exp.targets, steps)
    res = tuple(exp.raw.shape[-2:]) if exp.raw is not None else None
    chance = random_baseline(backbone, x, d.targets, resolution=res, steps=steps, trials=trials, seed=seed)
    return (
        f"deletion AUC {d.mean_auc:.3f} (random {chance['deletion_auc']:.3f}, lower is better) · "
        f"insertion AUC {i.mean_auc:.3f} (random {chance['insertion_auc']:.3f}, higher is better)"
    )
