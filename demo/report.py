"""Faithfulness reports: HTML and CSV renderings of the numbers (gradio-free).

The numbers come from :mod:`explainzoo.explainers.metrics` (:func:`evaluate`,
:func:`summary`, :func:`faithfulness`); this module only draws them:
:func:`write_report` turns an :class:`Evaluation` into a self-contained HTML
page (inline base64 PNGs) and a CSV, :func:`curve_figure` draws the deletion
and insertion curves, :func:`evaluate_one` and :func:`faithfulness_caption`
are the one-image table + figure and the one-line caption.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from explainzoo.backbones import Backbone
from explainzoo.explainers.metrics import (
    CSV_FIELDS,
    MAX_CASCADE_STEPS,
    MAX_STEPS,
    RANDOM,
    Evaluation,
    Row,
    evaluate,
    faithfulness,
    summary,
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


def _overlays(ev: Evaluation, key: tuple[str, str]) -> dict[str, Any]:
    """explainer -> PIL overlay of its map on the image the model saw."""
    from explainzoo.explainers.render import overlay

    image = ev.inputs.get(key)
    if image is None:
        return {}
    return {ex: overlay(image, m) for ex, m in ev.maps.get(key, {}).items()}


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
        "noise at the resolution of the first explainer's map (its layer's; pixel noise for input-gradient "
        "maps); its sanity columns compare the first explainer's map with a random map (what full "
        "decorrelation looks like).</p>",
        f"<p>Settings: {html.escape(str(ev.settings))}</p>",
        "<h2>Summary (mean over images)</h2><table><tr>"
        + "".join(f"<th>{h}</th>" for h in heads) + "</tr>",
    ]
    for s in summary(ev):
        cls = " class='random'" if s["explainer"] == RANDOM else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(s[c])}</td>" for c in cols) + "</tr>")
    parts.append("</table><h2>Per image</h2>")
    if ev.settings.get("sanity_images") is not None:
        k, n = ev.settings["sanity_images"], ev.settings.get("images")
        parts.append(f"<p>The sanity check, curves and maps cover the first {k} image(s) with a map "
                     f"of {n}; every image's numbers are in metrics.csv.</p>")
    fractions = ev.fractions if ev.fractions is not None else np.linspace(0, 1, 2)
    for key, curves in ev.curves.items():
        name, bname = key
        parts.append(f"<h3>{html.escape(name)} &middot; {html.escape(bname)}</h3><div>")
        for ex, img in _overlays(ev, key).items():
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


# --------------------------------------------------------------------------- one image


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
    """One image -> (table rows of :func:`summary`, curve figure as a PIL image).

    ``steps`` is clamped to ``MAX_STEPS`` and ``sanity_steps`` to
    ``MAX_CASCADE_STEPS``. The figure shows the first backbone's curves (one
    line per explainer, the random chance dashed) with the AUCs in the legend.
    """
    steps = max(1, min(int(steps), MAX_STEPS))
    sanity_steps = max(0, min(int(sanity_steps), MAX_CASCADE_STEPS))
    ev = evaluate([("image", image)], backbones, explainers, steps=steps, sanity_steps=sanity_steps,
                  trials=trials, box=box, seed=seed)
    key = ("image", backbones[0].name)
    fractions = ev.fractions if ev.fractions is not None else np.linspace(0, 1, steps + 1)
    return summary(ev), curve_figure(ev.curves.get(key, {}), fractions, backbones[0].name)


def faithfulness_caption(
    backbone: Backbone, x: Tensor, exp: Any, steps: int = 16, trials: int = 1, seed: int = 0
) -> str:
    """A one-line caption of :func:`~explainzoo.explainers.metrics.faithfulness`.

    E.g. ``"deletion AUC 0.331 (random 0.379, lower is better) · insertion AUC
    0.195 (random 0.173, higher is better)"``.
    """
    f = faithfulness(backbone, x, exp, steps=steps, trials=trials, seed=seed)
    return (
        f"deletion AUC {f.deletion_auc:.3f} (random {f.random_deletion_auc:.3f}, lower is better) · "
        f"insertion AUC {f.insertion_auc:.3f} (random {f.random_insertion_auc:.3f}, higher is better)"
    )
