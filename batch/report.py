"""``OUT/index.html``: one self-contained page summarising a job.

The per backbone x method table (accuracy, mean deletion/insertion AUC beside
their random-map chance level, time per image) and galleries: the most and
least confident images, images where the backbones disagree, and images
where two methods' maps disagree most. Thumbnails are inlined as base64 PNG,
so the page can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .results import Results, load_results
from .store import atomic_write_bytes

#: Thumbnails per gallery, and their side in pixels.
GALLERY, THUMB = 8, 112
#: (image, backbone) pairs compared for the method-disagreement gallery (a sample on large jobs).
MAX_PAIRS = 2000

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}
.g{display:flex;flex-wrap:wrap;gap:10px}.c{width:THUMBpx;font-size:11px;word-break:break-all}
.c img{width:THUMBpx;height:THUMBpx;display:block}""".replace("THUMB", str(THUMB))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}"
    return html.escape(str(v))


def _thumb(res: Results, row: Any) -> str:
    """An inline PNG of the row's map over the image the model saw ('' when unavailable)."""
    try:
        from PIL import Image

        from explainzoo.backbones import Preprocessing
        from explainzoo.backbones.images import load_image
        from explainzoo.explainers.render import overlay

        pre = dict(res.manifest["backbones"][row["backbone"]]["preprocessing"])
        for key in ("input_size", "mean", "std"):
            pre[key] = tuple(pre[key])
        import torch

        shown = Preprocessing(**pre).resize_crop(load_image(row["path"]))
        img = overlay(shown, torch.from_numpy(res.map(row))).resize((THUMB, THUMB), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    except Exception:  # a gallery must never fail the job: the cell shows text only
        return ""
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _card(res: Results, row: Any, caption: str) -> str:
    src = _thumb(res, row)
    img = f'<img src="{src}" alt="">' if src else ""
    return f'<div class="c">{img}{html.escape(caption)}</div>'


def _gallery(title: str, cards: list[str]) -> str:
    if not cards:
        return ""
    return f"<h2>{html.escape(title)}</h2><div class='g'>{''.join(cards)}</div>"


def _table(summary: Any) -> str:
    cols = ["backbone", "method", "images", "failed", "accuracy", "probability", "deletion_auc",
            "deletion_auc_random", "insertion_auc", "insertion_auc_random", "ms_per_image"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
    body = []
    for _, r in summary.iterrows():
        cells = "".join(
            f"<td class='l'>{_fmt(r[c])}</td>" if c in ("backbone", "method") else f"<td>{_fmt(r[c])}</td>"
            for c in cols
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _confidence(res: Results, ok: Any) -> str:
    if ok.empty:
        return ""
    first = ok[ok["method"] == ok["method"].iloc[0]].sort_values("probability")
    top = [_card(res, r, f"{r['target_name']} {r['probability']:.2f} ({r['backbone']}) {r['relpath']}")
           for _, r in first.iloc[::-1].head(GALLERY).iterrows()]
    low = [_card(res, r, f"{r['target_name']} {r['probability']:.2f} ({r['backbone']}) {r['relpath']}")
           for _, r in first.head(GALLERY).iterrows()]
    return _gallery("Most confident", top) + _gallery("Least confident", low)


def _backbones_disagree(res: Results, ok: Any) -> str:
    if ok["backbone"].nunique() < 2:
        return ""
    first = ok[ok["method"] == ok["method"].iloc[0]]
    top1 = first.assign(top1=first["top5_names"].map(lambda v: v[0] if len(v) else ""))
    cards = []
    for _path, g in top1.groupby("path", sort=True):
        if g["top1"].nunique() > 1:
            caption = "; ".join(f"{b}: {t}" for b, t in zip(g["backbone"], g["top1"]))
            cards.append(_card(res, g.iloc[0], f"{g.iloc[0]['relpath']} | {caption}"))
        if len(cards) >= GALLERY:
            break
    return _gallery("Backbones disagree (top-1)", cards)


def _small(m: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(torch.from_numpy(m)[None, None], 32)[0, 0].numpy().ravel()


def _methods_disagree(res: Results, ok: Any) -> str:
    if ok["method"].nunique() < 2:
        return ""
    m1, m2 = list(ok["method"].unique())[:2]
    pairs = []
    for (_path, _bb), g in ok[ok["method"].isin([m1, m2])].groupby(["path", "backbone"], sort=True):
        if len(g) == 2:
            pairs.append((g[g["method"] == m1].iloc[0], g[g["method"] == m2].iloc[0]))
        if len(pairs) >= MAX_PAIRS:
            break
    scored = []
    for a, b in pairs:
        va, vb = _small(res.map(a)), _small(res.map(b))
        rho = float(np.corrcoef(va, vb)[0, 1]) if va.std() > 0 and vb.std() > 0 else 0.0
        scored.append((rho, a, b))
    scored.sort(key=lambda t: t[0])
    cards = []
    for rho, a, b in scored[: GALLERY // 2]:
        cards.append(_card(res, a, f"{m1} | {a['relpath']} ({a['backbone']}) r={rho:.2f}"))
        cards.append(_card(res, b, f"{m2} | r={rho:.2f}"))
    return _gallery(f"Maps disagree most ({m1} vs {m2}, correlation)", cards)


def render_index(res: Results) -> str:
    """The HTML text of the summary page."""
    f = res.frame
    ok = f[f["error"].isna()] if len(f) else f
    counts = res.manifest.get("counts", {})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>explainzoo batch</title>"
        f"<style>{_CSS}</style></head><body><h1>explainzoo batch: {html.escape(res.root.name)}</h1>",
        f"<p>{counts.get('images', 0)} images, {counts.get('rows', 0)} rows, "
        f"{counts.get('images_failed', 0)} images failed. Deletion: lower is better; insertion: higher; "
        "'random' is the same metric on a random map (chance).</p>",
        _table(res.summary()) if len(f) else "<p>No rows.</p>",
    ]
    if len(ok):
        parts += [_confidence(res, ok), _backbones_disagree(res, ok), _methods_disagree(res, ok)]
    parts.append("</body></html>")
    return "".join(parts)


def write_index(out: str | Path) -> Path:
    """Write ``out/index.html`` for the job in ``out``; returns its path."""
    res = load_results(out)
    path = Path(out) / "index.html"
    atomic_write_bytes(path, render_index(res).encode())
    return path
