"""Which modules of a model produce maps, and how to read them as (N,C,h,w).

A probe forward pass at the backbone's input size records, for every module,
the layout of its output: ``nchw`` (convolutions), ``nhwc`` (Swin-style
channels-last maps) or ``tokens`` (ViT-style (N,L,C) with prefix tokens).
Aliases are checked against these real outputs, never guessed from names.

This module knows no model zoo: what a family knows about its models (the stem
convolution, the stage modules, prefix tokens, channels-last outputs, the
preferred CAM target) reaches it as :class:`LayerHints`, filled by the family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ExplainzooError
from .guard import preserved_state

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Modules whose output is never a useful "last" feature map.
_NOT_FEATURES = (
    *_POOLS,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Flatten,
)


@dataclass(frozen=True)
class LayerHints:
    """What a backbone family knows about its model's layers.

    Every hint is a candidate checked against the probe's real outputs: one
    that names no module, or a module whose output is not a map, is ignored.

    Attributes:
        first_conv: module path of the stem convolution (the ``conv1`` alias);
            when missing, the first ``nn.Conv2d`` in forward order.
        stage_paths: the modules that end each stage (``stage1..N``), in order.
        prefix_tokens: class/register tokens before the patch tokens of a
            token model's (N,L,C) outputs.
        nhwc: the model's 4-D maps are channels-last (ambiguous shapes are
            then read as NHWC).
        last: preferred paths for the ``last`` alias; the first whose output
            is a map of more than one pixel wins, else it is derived.
        trunk: when ``stage_paths`` is empty, the container ("" for the model
            itself) whose children run one after another; a stage then ends
            at each child after which the output stride grows (see
            :func:`stride_stages`), as timm's ``feature_info`` reductions.
    """

    first_conv: str | None = None
    stage_paths: tuple[str, ...] = ()
    prefix_tokens: int = 0
    nhwc: bool = False
    last: tuple[str, ...] = ()
    trunk: str | None = None


@dataclass(frozen=True)
class LayerFormat:
    """The layout of one module's output, as measured by the probe.

    Attributes:
        layout: "nchw", "nhwc" or "tokens".
        channels: C.
        size: (h, w) at the probe input.
        stride: input pixels per map pixel (float; 224/7 = 32.0).
        prefix_tokens: class/register tokens before the patch tokens.
    """

    layout: str
    channels: int
    size: tuple[int, int]
    stride: float
    prefix_tokens: int = 0

    @property
    def spatial(self) -> bool:
        """True when the map has more than one pixel."""
        return self.size[0] * self.size[1] > 1

    def to_map(self, out: Tensor, input_hw: tuple[int, int]) -> Tensor:
        """Read a module output as (N,C,h,w), the inverse of the model's layout."""
        if self.layout == "nchw":
            return out
        if self.layout == "nhwc":
            return out.permute(0, 3, 1, 2)
        n, length, c = out.shape
        tokens = length - self.prefix_tokens
        for rnd in (math.floor, math.ceil):
            h = int(rnd(input_hw[0] / self.stride))
            w = int(rnd(input_hw[1] / self.stride))
            if h * w == tokens:
                patches = out[:, self.prefix_tokens :, :]
                return patches.reshape(n, h, w, c).permute(0, 3, 1, 2)
        raise ExplainzooError(
            f"cannot arrange {tokens} patch tokens into a grid for input {input_hw} "
            f"(patch stride {self.stride:g})"
        )


def _format_of(out: object, input_hw: tuple[int, int], prefix: int, prefer_nhwc: bool):
    if not isinstance(out, Tensor) or not out.is_floating_point():
        return None
    H, W = input_hw
    if out.ndim == 4:
        _, a, b, c = out.shape
        as_nchw = _grid_ok(b, c, H, W)
        as_nhwc = _grid_ok(a, b, H, W)
        if as_nchw and as_nhwc:
            as_nchw = not prefer_nhwc
        if as_nchw:
            return LayerFormat("nchw", a, (b, c), H / b)
        if as_nhwc:
            return LayerFormat("nhwc", c, (a, b), H / a)
        return None
    if out.ndim == 3:
        _, length, c = out.shape
        tokens = length - prefix
        side = math.isqrt(max(tokens, 0))
        if tokens > 0 and H == W and side * side == tokens and side <= H:
            return LayerFormat("tokens", c, (side, side), H / side, prefix)
    return None


def _grid_ok(h: int, w: int, H: int, W: int) -> bool:
    """A (h,w) map plausibly tiles an (H,W) input with one common stride."""
    if not (1 <= h <= H and 1 <= w <= W):
        return False
    if h == 1 and w == 1:
        return True
    sh, sw = H / h, W / w
    return abs(sh - sw) <= 0.25 * max(sh, sw)


@dataclass(frozen=True)
class Probe:
    """What one forward pass taught us about a model's modules.

    Attributes:
        formats: module path -> output layout, for modules whose output is a map.
        order: module paths in the order their forward finished.
        same_as: module path -> paths of submodules that returned the very same
            tensor object (a container passing its last child's output through).
    """

    formats: dict[str, LayerFormat]
    order: list[str]
    same_as: dict[str, set[str]]


def probe_model(model: nn.Module, input_size: tuple[int, int], hints: LayerHints | None = None) -> Probe:
    """Run one forward pass on zeros and record every module's output layout.

    Args:
        model: the classifier.
        input_size: (H, W) of the probe input.
        hints: the family's prefix-token count and channels-last flag.
    """
    hints = hints or LayerHints()
    prefix, prefer_nhwc = hints.prefix_tokens, hints.nhwc
    formats: dict[str, LayerFormat] = {}
    order: list[str] = []
    outputs: dict[str, Tensor] = {}  # kept alive during the probe so ids stay unique
    handles = []

    def make_hook(path: str) -> Callable:
        def hook(module: nn.Module, args: object, out: object) -> None:
            order.append(path)
            if isinstance(out, Tensor):
                outputs.setdefault(path, out)
            fmt = _format_of(out, input_size, prefix, prefer_nhwc)
            if fmt is not None and path not in formats:
                formats[path] = fmt

        return hook

    try:
        for path, module in model.named_modules():
            if path:
                handles.append(module.register_forward_hook(make_hook(path)))
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with preserved_state(model), torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    by_id: dict[int, list[str]] = {}
    for path, out in outputs.items():
        by_id.setdefault(id(out), []).append(path)
    same_as = {p: set(paths) - {p} for paths in by_id.values() for p in paths}
    return Probe(formats, order, same_as)


def derive_aliases(model: nn.Module, probe: Probe, hints: LayerHints) -> dict[str, str]:
    """Alias -> module path: ``conv1``, ``last`` and ``stage1..N``, checked on the probe."""
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    first = hints.first_conv if hints.first_conv in modules else None
    if first is None or not isinstance(modules[first], nn.Conv2d):
        first = next((p for p in probe.order if isinstance(modules[p], nn.Conv2d)), None)
    if first is not None:
        out["conv1"] = first
    stages = [p for p in hints.stage_paths if p in probe.formats]
    if not stages and hints.trunk is not None:
        stages = stride_stages(model, probe, hints.trunk)
    last = derive_last(model, probe, stages, hints.last)
    if last is not None:
        out["last"] = last
    for i, p in enumerate(stages, 1):
        out[f"stage{i}"] = p
    return out


def derive_last(
    model: nn.Module, probe: Probe, stage_paths: list[str], preferred: tuple[str, ...] = ()
) -> str | None:
    """The last spatial feature map of a model: the default CAM target.

    The first of ``preferred`` (the family's hint, e.g. a ViT's last
    ``norm1``) whose output is a map of more than one pixel wins. Otherwise:
    the last tensor returned by a module that is a map of more than one pixel
    and not a pooling output; of the modules that returned that very tensor,
    the stage (from ``stage_paths``) if one did, else the outermost.
    """
    for cand in preferred:
        fmt = probe.formats.get(cand)
        if fmt is not None and fmt.spatial:
            return cand
    modules = dict(model.named_modules())
    stages = set(stage_paths)
    for path in reversed(probe.order):
        fmt = probe.formats.get(path)
        if fmt is None or not fmt.spatial:
            continue
        group = {path} | probe.same_as.get(path, set())
        if any(isinstance(modules[p], _POOLS) for p in group):
            continue  # a pooled map (VGG ends its features with a max-pool)
        members = [
            p for p in group
            if not isinstance(modules[p], _NOT_FEATURES) and probe.order.count(p) == 1
        ]
        if not members:
            continue
        in_stages = [p for p in members if p in stages]
        return min(in_stages or members, key=lambda p: (p.count("."), probe.order.index(p)))
    return None


def stride_stages(model: nn.Module, probe: Probe, trunk: str) -> list[str]:
    """The children of ``trunk`` that end a stage: the last map at each output stride.

    Children whose output is no spatial map (heads, pools, identities) are
    skipped; of the rest, in forward order, a child ends a stage when the
    next one's stride is larger (by more than a third), and the last one ends
    the last stage.
    """
    try:
        parent = model.get_submodule(trunk) if trunk else model
    except AttributeError:
        return []
    paths = [f"{trunk}.{n}" if trunk else n for n, _ in parent.named_children()]
    kept = [
        p for p in paths
        if p in probe.formats and probe.formats[p].spatial
        and not isinstance(model.get_submodule(p), _NOT_FEATURES)
    ]
    kept.sort(key=probe.order.index)
    ends = []
    for here, after in zip(kept, kept[1:]):
        if probe.formats[after].stride > probe.formats[here].stride * 1.33:
            ends.append(here)
    return ends + kept[-1:]
