"""Decode one image, and explain one batch into rows: shared by both engines.

:func:`decode` runs where the pixels are read (a DataLoader worker, a Ray
task): the safe loader :func:`explainzoo.backbones.images.load_image`, then the
backbone's preprocessing. :class:`Processor` runs where the model is (the main
process, a Ray actor): one backbone, every requested method, batched, and turns
each (image, method) into a row of :func:`explainzoo.batch.store.schema`.
"""

from __future__ import annotations

import io
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError, Preprocessing

from .inputs import Item
from .spec import JobSpec, build_explainers

#: How a stored map becomes the [0,1] map at input size (see :func:`explainzoo.batch.results.decode_map`).
RULE_TEMPLATE = "upsample_normalize"  # the explainer template: bilinear upsample, then normalize
RULE_MAP = "map"  # the [0,1] map itself, stored at input size


@dataclass
class Decoded:
    """A decoded image: the model input (3,H,W) or the reason it failed."""

    x: Tensor | None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def decode(path: str, pre: Preprocessing) -> Decoded:
    """Load ``path`` with the safe loader and preprocess it; never raises for a bad file."""
    from explainzoo.backbones.images import load_image

    try:
        image = load_image(path)
        x = pre(image)[0]
    except ExplainzooError as exc:
        return Decoded(None, error=str(exc))
    except Exception as exc:  # a decoder bug must not stop the job either
        return Decoded(None, error=f"cannot decode the image ({type(exc).__name__}: {exc})")
    return Decoded(x, image.width, image.height)


def template_rule():
    """(upsample, scale-to-[0,1]) of the explainer template, whatever their current names."""
    try:
        from explainzoo.explainers.mechanics import scale_unit, upsample
    except ImportError:  # older layout: explainers.capture's normalize
        from explainzoo.explainers import normalize as scale_unit  # type: ignore[attr-defined,no-redef]
        from explainzoo.explainers import upsample  # type: ignore[no-redef]
    return upsample, scale_unit


def encode_raw(raw: Tensor, target: Tensor) -> tuple[bytes, list[int], float, str]:
    """A map as stored: float16 bytes (scaled to max |value| 1), shape, scale, rule.

    The raw map is kept at layer resolution when the template rule rebuilds
    ``target`` (the explainer's map) from it within 1e-3; otherwise the map
    itself is stored at input size (rule :data:`RULE_MAP`).
    """
    upsample, normalize = template_rule()
    raw = torch.nan_to_num(raw.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(raw.abs().max()) or 1.0
    half = (raw / scale).to(torch.float16)
    rebuilt = normalize(upsample(half.float()[None] * scale, tuple(target.shape[-2:])))[0]
    if float((rebuilt - target.detach().float().cpu()).abs().max()) <= 1e-3:
        return half.numpy().tobytes(), list(half.shape), scale, RULE_TEMPLATE
    half = target.detach().float().cpu().to(torch.float16)
    return half.numpy().tobytes(), list(half.shape), 1.0, RULE_MAP


def _seed_of(path: str, seed: int) -> int:
    """A per-image seed: the random baseline of an image never depends on its batch."""
    return (zlib.crc32(path.encode()) + 1_000_003 * seed) % (2**31)


def baseline_maps(path: str, seed: int, size: tuple[int, int], resolution: tuple[int, int],
                  trials: int = 1) -> Tensor:
    """The random maps (trials,H,W) of one image's chance level, seeded by its path.

    Noise at ``resolution`` (the map's raw resolution) upsampled to ``size``,
    as :func:`explainzoo.explainers.metrics.random_maps`; trial ``k`` uses the
    image's seed plus ``k``, so the maps never depend on the batch.
    """
    from explainzoo.explainers.metrics import random_maps

    base = _seed_of(path, seed)
    return torch.cat([random_maps(1, size, resolution, seed=base + k) for k in range(trials)])


def box_region(bb: Backbone, width: int, height: int, box: list[float]) -> Tensor | None:
    """A box in a ``width`` x ``height`` image's pixels -> (H,W) bool mask at the model input.

    None when the box lies outside that image (its pointing game is then null).
    """
    from explainzoo.explainers.metrics.evaluation import input_box_mask

    try:
        return input_box_mask(bb, np.zeros((height, width, 3), dtype=np.uint8), box)
    except ExplainzooError:
        return None


class Processor:
    """One backbone and the job's methods: (items, decoded) -> rows."""

    def __init__(self, spec: JobSpec, backbone: Backbone, device: torch.device, run_id: str,
                 out: str | None = None) -> None:
        self.spec, self.bb, self.device, self.run_id = spec, backbone, device, run_id
        self.out = Path(out) if out else None
        self.explainers = build_explainers(spec)
        self.bb.model.to(device)

    # -- rows ----------------------------------------------------------------
    def _base(self, item: Item, dec: Decoded, method: str) -> dict[str, Any]:
        ex = self.explainers[method]
        h, w = self.bb.input_size
        return {
            "path": item.path, "relpath": item.relpath, "label": item.label,
            "image_width": dec.width, "image_height": dec.height,
            "backbone": self.bb.name, "weights": self.bb.weights, "method": method,
            "options": json.dumps(ex.config, sort_keys=True, default=str),
            "input_height": h, "input_width": w, "run_id": self.run_id, "error": None,
        }

    def error_rows(self, item: Item, dec: Decoded, methods: list[str], msg: str) -> list[dict[str, Any]]:
        rows = []
        for m in methods:
            r = self._base(item, dec, m)
            r["error"] = msg
            rows.append(r)
        return rows

    def _label_index(self, label: str | None) -> int | None:
        if label is None:
            return None
        try:
            return self.bb.class_index(label)
        except ExplainzooError:
            return None

    def _target(self, item: Item) -> tuple[int | None, str | None]:
        """(class index or None for top-1, error) for one image."""
        t = self.spec.target
        if t is None:
            return None, None
        if t == "label":
            idx = self._label_index(item.label)
            if idx is None:
                return None, (f"label {item.label!r} is not a class of {self.bb.name}; "
                              "use --target top1 or name the folder after a class")
            return idx, None
        return self.bb.class_index(t), None

    def rows(self, items: list[Item], decoded: list[Decoded],
             pending: list[list[str]] | None = None) -> list[dict[str, Any]]:
        """Explain a batch; one row per (item, pending method), errors included.

        Raises:
            torch.cuda.OutOfMemoryError: for the caller to retry with a smaller batch.
        """
        pending = pending or [list(self.spec.explainers) for _ in items]
        out: list[dict[str, Any]] = []
        good: list[int] = []
        targets: list[int | None] = []
        for i, (item, dec) in enumerate(zip(items, decoded)):
            if dec.x is None:
                out += self.error_rows(item, dec, pending[i], dec.error or "cannot decode the image")
                continue
            t, err = self._target(item)
            if err:
                out += self.error_rows(item, dec, pending[i], err)
                continue
            good.append(i)
            targets.append(t)
        if not good:
            return out
        x = torch.stack([decoded[i].x for i in good]).to(self.device)
        logits: dict[int, Tensor] = {}
        results: list[tuple[str, list[int], Any, float]] = []
        for method in self.spec.explainers:
            sub = [k for k, i in enumerate(good) if method in pending[i]]
            if not sub:
                continue
            for ks, exp, dt in self._explain(method, x, sub, targets):
                if exp is None:
                    for k in ks:
                        i = good[k]
                        out += self.error_rows(items[i], decoded[i], [method], dt)
                    continue
                lg = getattr(exp, "logits", None)
                if lg is not None:
                    for j, k in enumerate(ks):
                        logits.setdefault(k, lg[j].detach().float().cpu())
                results.append((method, ks, exp, dt))
        missing = sorted({k for _, ks, _, _ in results for k in ks} - set(logits))
        if missing:
            with torch.inference_mode():
                lg = self.bb.model(x[missing]).float().cpu()
            logits.update({k: lg[j] for j, k in enumerate(missing)})
        for method, ks, exp, dt in results:
            out += self._method_rows(method, ks, exp, dt, x, good, items, decoded, logits)
        return out

    def _explain(self, method: str, x: Tensor, sub: list[int], targets: list[int | None]):
        """Yield (indices, Explanation or None, seconds or the error) for one method.

        The whole subset runs as one batch; when it fails, each image alone,
        so one bad image costs only its own row.
        """
        ex = self.explainers[method]
        layer = self.spec.layer if ex.uses_layer else None

        def once(ks: list[int]):
            return ex.explain(self.bb, x[ks], target=_targets(targets, ks), layer=layer)

        t0 = time.perf_counter()
        try:
            yield sub, once(sub), time.perf_counter() - t0
            return
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            if len(sub) == 1:
                yield sub, None, f"{method} failed: {type(exc).__name__}: {exc}"
                return
        for k in sub:
            t0 = time.perf_counter()
            try:
                yield [k], once([k]), time.perf_counter() - t0
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                yield [k], None, f"{method} failed: {type(exc).__name__}: {exc}"

    def _method_rows(self, method, ks, exp, dt, x, good, items, decoded, logits) -> list[dict[str, Any]]:
        n = len(ks)
        metrics = self._metrics(exp, x[ks], [items[good[k]].path for k in ks],
                                [(decoded[good[k]].width, decoded[good[k]].height) for k in ks])
        rows = []
        for j, k in enumerate(ks):
            i = good[k]
            item, dec = items[i], decoded[i]
            r = self._base(item, dec, method)
            probs = logits[k].softmax(0)
            top = probs.topk(min(5, probs.numel()))
            t = int(exp.targets[j])
            li = self._label_index(item.label)
            raw, shape, scale, rule = encode_raw(exp.raw[j], exp.maps[j])
            r.update({
                "layer": exp.layer, "target": t, "target_name": self.bb.labels[t],
                "score": float(exp.scores[j]), "probability": float(probs[t]),
                "top5": top.indices.tolist(), "top5_probs": top.values.tolist(),
                "top5_names": [self.bb.labels[c] for c in top.indices.tolist()],
                "label_index": li, "correct": None if li is None else bool(int(probs.argmax()) == li),
                "raw": raw, "raw_shape": shape, "raw_scale": scale, "map_rule": rule,
                "time_ms": 1000.0 * dt / n,
            })
            r.update({key: _number(v[j]) for key, v in metrics.items()})
            rows.append(r)
            if self.spec.overlays and self.out is not None:
                self._overlay(item, method, x[k], exp.maps[j])
        return rows

    def _metrics(self, exp, x: Tensor, paths: list[str], sizes: list[tuple[Any, Any]]) -> dict[str, Tensor]:
        """Deletion/insertion AUCs and pointing of the maps and of per-image random maps (chance)."""
        if not self.spec.metrics:
            return {}
        from explainzoo.explainers.metrics import deletion, insertion

        steps, trials = self.spec.metric_steps, self.spec.random_trials
        hw, res = tuple(x.shape[-2:]), tuple(exp.raw.shape[-2:])
        rand = [baseline_maps(p, self.spec.seed, hw, res, trials) for p in paths]  # each (T,H,W)
        out: dict[str, Tensor] = {}
        for name, fn in (("deletion", deletion), ("insertion", insertion)):
            if name in self.spec.metrics:
                out[f"{name}_auc"] = fn(self.bb, x, exp.maps, target=exp.target, steps=steps).auc
                chance = [fn(self.bb, x, torch.stack([r[k] for r in rand]).to(x.device), target=exp.target,
                             steps=steps).auc.cpu() for k in range(trials)]
                out[f"{name}_auc_random"] = torch.stack(chance).mean(0)
        if "pointing" in self.spec.metrics:
            out.update(self._pointing(exp.maps.detach().float().cpu(), rand, sizes))
        return out

    def _pointing(self, maps: Tensor, rand: list[Tensor], sizes: list[tuple[Any, Any]]) -> dict[str, Tensor]:
        """Pointing game of each map and (mean over trials) of its random maps; NaN: box outside."""
        from explainzoo.explainers.metrics import pointing_game

        hit, chance = [], []
        for j, (w, h) in enumerate(sizes):
            region = box_region(self.bb, int(w), int(h), self.spec.box) if w and h else None
            if region is None:
                hit.append(float("nan"))
                chance.append(float("nan"))
                continue
            hit.append(float(pointing_game(maps[j], mask=region)[0]))
            chance.append(float(pointing_game(rand[j], mask=region).float().mean()))
        return {"pointing": torch.tensor(hit), "pointing_random": torch.tensor(chance)}

    def _overlay(self, item: Item, method: str, x: Tensor, m: Tensor) -> None:
        from explainzoo.explainers.render import overlay

        from .store import atomic_write_bytes

        shown = self.bb.preprocessing.unnormalize(x.detach().float().cpu())
        img = overlay(shown, m.detach().float().cpu())
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        assert self.out is not None
        # a list may name ../x.jpg: keep every overlay inside OUT
        parts = [p for p in Path(item.relpath).parts if p not in ("..", ".") and not Path(p).anchor]
        dest = self.out.joinpath("overlays", safe_name(self.bb.name), method, *parts[:-1], parts[-1] + ".png")
        atomic_write_bytes(dest, buf.getvalue())


def _number(v: Any) -> float | None:
    """A metric value as a float; NaN (not measured) as None."""
    f = float(v)
    return None if f != f else f


def _targets(targets: list[int | None], ks: list[int]) -> Any:
    picked = [targets[k] for k in ks]
    return None if all(t is None for t in picked) else picked


def safe_name(name: str) -> str:
    """A backbone name as a folder name (``timm:resnet18`` -> ``timm_resnet18``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def stack_numpy(decoded: list[Decoded], hw: tuple[int, int]) -> np.ndarray:
    """(B,3,H,W) float32 of the decoded inputs (zeros where decoding failed)."""
    out = np.zeros((len(decoded), 3, *hw), dtype=np.float32)
    for i, d in enumerate(decoded):
        if d.x is not None:
            out[i] = d.x.numpy()
    return out
