"""Which modules of a model produce maps, and how to read them as (N,C,h,w).

A probe forward pass at the backbone's input size records, for every module,
the layout of its output: ``nchw`` (convolutions), ``nhwc`` (Swin-style
channels-last maps) or ``tokens`` (ViT-style (N,L,C) with prefix tokens).
Aliases are checked against these real outputs, never guessed from names.
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


def probe_model(model: nn.Module, input_size: tuple[int, int]) -> Probe:
    """Run one forward pass on zeros and record every module's output layout."""
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    prefer_nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
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


def derive_last(model: nn.Module, probe: Probe, stage_paths: list[str]) -> str | None:
    """The last spatial feature map of a model: the default CAM target.

    Token models (ViT/DeiT): with class-token pooling only the class token of
    the final norm gets a gradient, so the target is the last block's
    ``norm1`` (the attention input), as pytorch-grad-cam recommends; with
    average/attention pooling it is the final ``norm``. Other models: the
    last tensor returned by a module that is a map of more than one pixel and
    not a pooling output; of the modules that returned that very tensor, the
    stage (from ``feature_info``) if one did, else the outermost.
    """
    modules = dict(model.named_modules())
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) and hasattr(model, "patch_embed"):
        token_pool = getattr(model, "global_pool", None) == "token"
        cand = f"blocks.{len(blocks) - 1}.norm1" if token_pool else "norm"
        if cand in probe.formats and probe.formats[cand].spatial:
            return cand
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
