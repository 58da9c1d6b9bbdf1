"""The job spec: what a run computes, checked before any work starts.

A :class:`JobSpec` has two halves. The *identity* fields (inputs, backbones,
methods, layer, target, options, metrics, weights, input size, seed) decide
what every row contains: an OUT folder holds one identity, and a rerun with a
different one is refused. The *execution* fields (engine, device, batch size,
workers, shard size, overlays, quiet) only decide how fast it goes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from explainzoo.backbones import (
    Backbone,
    ExplainzooError,
    WeightsUnavailableError,
    create_backbone,
)

log = logging.getLogger("explainzoo.batch")

#: Metrics a job can add to its rows.
METRICS: tuple[str, ...] = ("deletion", "insertion", "pointing")
#: Fields that decide the rows (compared on resume).
IDENTITY: tuple[str, ...] = (
    "inputs", "backbones", "explainers", "layer", "target", "options", "metrics",
    "metric_steps", "weights", "checkpoint", "image_size", "seed", "limit", "box", "random_trials",
)
#: Identity fields a run may change with ``extend=True`` (rows already written stay valid).
EXTENDABLE: tuple[str, ...] = ("inputs", "backbones", "explainers", "limit")


def _split(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


@dataclass
class JobSpec:
    """Everything a dataset job needs (see :func:`explainzoo.batch.run_batch`)."""

    inputs: list[str]
    backbones: list[str]
    explainers: list[str]
    layer: str | None = None
    target: str | int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    metric_steps: int = 20
    weights: str = "pretrained"
    checkpoint: str | None = None
    image_size: int | None = None
    seed: int = 0
    limit: int | None = None
    box: list[float] | None = None
    random_trials: int = 1
    # execution only
    engine: str = "local"
    device: str = "auto"
    batch_size: int | str = 16
    workers: int = 1
    shard_rows: int = 512
    overlays: bool = False
    ray_address: str | None = None
    actors: int | None = None

    def __post_init__(self) -> None:
        raw = [self.inputs] if isinstance(self.inputs, str | os.PathLike) else self.inputs
        # absolute, so a rerun from another folder is the same job (or refused)
        self.inputs = [os.path.abspath(os.path.expanduser(str(i))) for i in raw]
        self.backbones = _split(self.backbones)
        self.explainers = _split(self.explainers)
        self.metrics = _split(self.metrics)
        self.target = _norm_target(self.target)
        self.options = dict(self.options or {})
        if self.box is not None:
            self.box = _norm_box(self.box)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the rows, JSON-ready."""
        return json.loads(json.dumps({k: getattr(self, k) for k in IDENTITY}, default=str))

    def fingerprint(self) -> str:
        """A short hash of :meth:`identity`."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _norm_target(target: Any) -> str | int | None:
    """None/"top1" -> None; digits -> int; anything else stays a name (or "label")."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "top1", "top-1")):
        return None
    if isinstance(target, bool):
        raise ExplainzooError(f"--target takes top1, label, a class index or a name, got {target!r}")
    if isinstance(target, int):
        return target
    t = str(target).strip()
    return int(t) if t.isdigit() else t


def _norm_box(box: Any) -> list[float]:
    """(x0, y0, x1, y1) as floats, from a sequence or an ``"x0,y0,x1,y1"`` string."""
    try:
        vals = [float(v) for v in (box.split(",") if isinstance(box, str) else box)]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not (vals[2] > vals[0] and vals[3] > vals[1]):
        raise ExplainzooError(f"--box takes x0,y0,x1,y1 in image pixels with x1 > x0 and y1 > y0, got {box!r}")
    return vals


def check(spec: JobSpec) -> None:
    """Validate the cheap parts of a spec (names of methods, metrics, numbers).

    Raises:
        ExplainzooError: one line saying what is wrong and how to fix it.
    """
    from explainzoo.explainers import explainer_class

    if not spec.backbones:
        raise ExplainzooError("no backbone given; pass -b NAME[,NAME...] (see `explainzoo list backbones`)")
    if not spec.explainers:
        raise ExplainzooError("no explainer given; pass -m NAME[,NAME...] (see `explainzoo list explainers`)")
    for name in spec.explainers:
        cls = explainer_class(name)
        if not cls.needs_input or not hasattr(cls, "attribute"):
            raise ExplainzooError(
                f"{name} returns a tile grid, not a map; batch jobs take map methods (gradcam, saliency, ...)"
            )
    for m in spec.metrics:
        if m not in METRICS:
            raise ExplainzooError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
    if "pointing" in spec.metrics and spec.box is None:
        raise ExplainzooError("the pointing metric needs a box: pass --box x0,y0,x1,y1 (in image pixels)")
    if spec.engine not in ("local", "ray"):
        raise ExplainzooError(f"unknown engine {spec.engine!r}; use local or ray")
    if spec.weights not in ("pretrained", "random", "checkpoint"):
        raise ExplainzooError(f"weights must be pretrained, random or checkpoint, got {spec.weights!r}")
    if spec.weights == "checkpoint" and not spec.checkpoint:
        raise ExplainzooError("weights=checkpoint needs a checkpoint file (--checkpoint FILE)")
    bs = spec.batch_size
    if not (bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise ExplainzooError(f"batch size must be a positive integer or 'auto', got {bs!r}")
    for name in ("workers", "shard_rows", "metric_steps", "random_trials"):
        v = getattr(spec, name)
        low = 0 if name == "workers" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ExplainzooError(f"{name} must be an integer >= {low}, got {v!r}")
    if spec.image_size is not None and (not isinstance(spec.image_size, int) or spec.image_size < 16):
        raise ExplainzooError(f"image size must be an integer >= 16, got {spec.image_size!r}")
    build_explainers(spec)


def build_explainers(spec: JobSpec) -> dict[str, Any]:
    """One explainer instance per method; each gets the ``options`` it declares.

    Raises:
        ExplainzooError: an option no requested method knows.
    """
    from explainzoo.explainers import create_explainer, explainer_class

    known: dict[str, set[str]] = {m: set(explainer_class(m).options) for m in spec.explainers}
    for key in spec.options:
        if not any(key in opts for opts in known.values()):
            listing = "; ".join(f"{m}: {', '.join(sorted(o)) or 'none'}" for m, o in known.items())
            raise ExplainzooError(f"no requested method takes the option {key!r} (options: {listing})")
    return {
        m: create_explainer(m, **{k: v for k, v in spec.options.items() if k in known[m]})
        for m in spec.explainers
    }


def build_backbone(spec: JobSpec, name: str) -> Backbone:
    """The backbone ``name`` as every process of the job builds it.

    The torch RNG is seeded with ``spec.seed`` first, so a random init is the
    same in every worker, actor and rerun. ``weights="pretrained"`` falls back
    to a random init with a logged warning when no weights are reachable.
    """
    torch.manual_seed(spec.seed)
    if spec.weights == "checkpoint":
        bb = create_backbone(name, pretrained=False, checkpoint=spec.checkpoint)
    elif spec.weights == "random":
        bb = create_backbone(name, pretrained=False)
    else:
        try:
            bb = create_backbone(name, pretrained=True)
        except WeightsUnavailableError as exc:
            log.warning("%s; %s runs on RANDOM INIT: its maps show an untrained network", exc, name)
            torch.manual_seed(spec.seed)
            bb = create_backbone(name, pretrained=False)
    if spec.image_size:
        s = int(spec.image_size)
        bb.preprocessing = dataclasses.replace(bb.preprocessing, input_size=(s, s))
    bb.model.eval()
    return bb


def check_backbone(spec: JobSpec, bb: Backbone, labels: set[str]) -> None:
    """The layer resolves on ``bb`` and the target names a class.

    Raises:
        ExplainzooError: unknown layer or class (the message lists the choices).
    """
    from explainzoo.explainers import explainer_class

    if spec.layer is not None and any(explainer_class(m).uses_layer for m in spec.explainers):
        bb.resolve_layer(spec.layer)
    if spec.target == "label":
        if not labels:
            raise ExplainzooError(
                "--target label needs labelled inputs (an ImageFolder root/<label>/*.jpg or a CSV label column)"
            )
    elif spec.target is not None:
        bb.class_index(spec.target)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ExplainzooError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExplainzooError("--device cuda but no CUDA GPU is visible; use --device cpu")
    return dev


def compare(old: Mapping[str, Any], new: JobSpec, extend: bool) -> list[str]:
    """The identity fields that differ between a stored spec and ``new`` (allowed ones dropped)."""
    mine = new.identity()
    # a field added after a job was written reads as its default there
    defaults = {f.name: f.default for f in dataclasses.fields(JobSpec) if f.default is not dataclasses.MISSING}
    diff = [k for k in IDENTITY if old.get(k, defaults.get(k)) != mine.get(k)]
    if extend:
        diff = [k for k in diff if k not in EXTENDABLE]
    return diff
