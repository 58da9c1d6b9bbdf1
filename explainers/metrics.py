"""Which map can you trust? Faithfulness metrics, sanity checks and chance levels.

Tensors in, numbers out. Every metric runs the model in batched forward passes
under :func:`torch.inference_mode`, chunked by ``batch_size``, with the
backbone's lock held and its state restored (eval mode) afterwards.

* :func:`deletion` / :func:`insertion` -- Petsiuk et al., RISE: Randomized
  Input Sampling for Explanation of Black-box Models, BMVC 2018
  (https://arxiv.org/abs/1806.07421). Pixels are removed from (deletion) or
  revealed on (insertion) the image in the order of the map, most important
  first, in ``steps`` equal steps; the curve is the model's softmax
  probability of the explained class at each step, its AUC the trapezoid over
  the removed fraction in [0, 1]. Faithful maps have a *low* deletion AUC and a
  *high* insertion AUC. Cost: ``N * (steps + 1)`` images through the model
  (plus ``N`` when the target is None), in ``ceil(N * (steps + 1) / batch_size)``
  batched calls.
* :func:`cascading_randomization` -- the model-randomisation sanity check of
  Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018
  (https://arxiv.org/abs/1810.03292): the parameterised modules of a deep copy
  of the model are re-initialised from the output side, cumulatively; the map
  is recomputed after each step and compared with the original map (Spearman
  rank correlation and SSIM). A method that *passes* decorrelates (scores fall
  towards 0). Cost: ``1 + cascade_steps`` explainer calls plus one forward pass
  (recording the execution order).
* :func:`pointing_game` -- Zhang et al., Top-down Neural Attention by
  Excitation Backprop, ECCV 2016 (https://arxiv.org/abs/1608.00507): does the
  map's maximum fall inside a box or mask. No forward pass.
* :func:`random_maps` and :func:`random_baseline` -- the chance level of every
  metric: smooth, seeded noise at the explained layer's resolution, upsampled
  the same way as real maps (bilinear), so a number can be read against
  chance.

:data:`MAX_STEPS` and :data:`MAX_CASCADE_STEPS` cap the cost a server accepts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, preserved_state

from .base import Explainer, as_backbone
from .capture import normalize, resolve_targets, upsample

__all__ = [
    "MAX_CASCADE_STEPS",
    "MAX_STEPS",
    "Curve",
    "SanityResult",
    "blur",
    "cascading_randomization",
    "deletion",
    "insertion",
    "pointing_game",
    "random_baseline",
    "random_maps",
    "spearman",
    "ssim",
]

#: Server-side cap on the number of deletion / insertion steps (the demo clamps to it).
MAX_STEPS = 64
#: Server-side cap on the number of cascading-randomisation steps.
MAX_CASCADE_STEPS = 12
#: Default number of images per forward pass.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve for a batch of N images.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: (steps+1,) fraction of pixels removed / revealed, 0 to 1.
        probs: (N, steps+1) softmax probability of the target class at each step.
        auc: (N,) trapezoid area under ``probs`` over ``fractions`` (in [0, 1]).
        targets: (N,) the class explained.
        baseline: the baseline used (``"zero"``, ``"mean"``, ``"blur"`` or ``"tensor"``).
        forward_passes: images sent through the model.
    """

    kind: str
    fractions: Tensor
    probs: Tensor
    auc: Tensor
    targets: Tensor
    baseline: str
    forward_passes: int

    @property
    def mean_auc(self) -> float:
        """The AUC averaged over the batch."""
        return float(self.auc.mean())


@dataclass(frozen=True)
class SanityResult:
    """The cascading model-randomisation check for a batch of N images.

    Attributes:
        layers: for each cascade step, the last (lowest) module path
            re-initialised so far; step ``k`` has randomised every parameterised
            module from the output down to ``layers[k]``.
        randomized: (K,) number of parameterised modules re-initialised at each step.
        spearman: (K, N) Spearman rank correlation with the original map.
        ssim: (K, N) SSIM with the original map.
        maps: (K, N, H, W) the recomputed maps.
        original: (N, H, W) the map of the untouched model.
    """

    layers: list[str]
    randomized: list[int]
    spearman: Tensor
    ssim: Tensor
    maps: Tensor
    original: Tensor

    @property
    def mean_spearman(self) -> float:
        """Spearman averaged over the cascade and the batch (lower: passes)."""
        return float(self.spearman.mean())

    @property
    def mean_ssim(self) -> float:
        """SSIM averaged over the cascade and the batch (lower: passes)."""
        return float(self.ssim.mean())


# --------------------------------------------------------------------------- helpers


def _check_batch(x: Any, maps: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ExplainzooError(f"x must be a (N,3,H,W) tensor, got {shape}")
    if not isinstance(maps, Tensor):
        raise ExplainzooError(f"maps must be a (N,H,W) tensor, got {type(maps).__name__}")
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape != (x.shape[0], x.shape[2], x.shape[3]):
        raise ExplainzooError(
            f"maps of shape {tuple(maps.shape)} do not match the input {tuple(x.shape)}: "
            f"expected ({x.shape[0]},{x.shape[2]},{x.shape[3]}) (use exp.maps)"
        )
    return x, torch.nan_to_num(maps.detach().float(), nan=0.0)


def _check_steps(steps: int, cap: int, what: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ExplainzooError(f"{what} must be a positive integer, got {steps!r}")
    if steps > cap:
        raise ExplainzooError(f"{what}={steps} exceeds the cap of {cap}")
    return steps


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExplainzooError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """Logits of ``x`` in chunks (caller holds lock, eval mode, inference mode)."""
    outs = []
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        if not isinstance(out, Tensor) or out.ndim != 2:
            raise ExplainzooError("the model must return (N, num_classes) logits")
        outs.append(out.float())
    return torch.cat(outs)


def _gaussian_kernel1d(sigma: float, radius: int, device: torch.device) -> Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x: Tensor, sigma: float = 5.0) -> Tensor:
    """Separable Gaussian blur of (N,C,H,W), replicate-padded, radius ``ceil(2 sigma)``.

    The insertion baseline of RISE (Petsiuk et al., 2018). Their code uses a
    Gaussian of sigma 5 truncated to 11 taps (radius 1 sigma, close to a box
    filter); here the kernel reaches 2 sigma (21 taps for sigma 5 on 224-pixel
    inputs), a blur that removes more of the object's texture, so the
    blurred start carries less class evidence.
    """
    if sigma <= 0:
        return x.clone()
    n, c, h, w = x.shape
    radius = max(1, math.ceil(2 * sigma))
    k = _gaussian_kernel1d(sigma, radius, x.device).to(x.dtype)
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _baseline(x: Tensor, baseline: str | Tensor, sigma: float) -> tuple[Tensor, str]:
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(x), x.shape), "tensor"
        except RuntimeError:
            raise ExplainzooError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to {tuple(x.shape)}"
            ) from None
    if baseline == "zero":
        return torch.zeros_like(x), baseline
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x), baseline
    if baseline == "blur":
        return blur(x, sigma), baseline
    raise ExplainzooError(f"baseline must be 'zero', 'mean', 'blur' or a tensor, got {baseline!r}")


def _curve(
    kind: str,
    backbone: Backbone | nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Any,
    steps: int,
    baseline: str | Tensor,
    batch_size: int,
    blur_sigma: float,
) -> Curve:
    bb = as_backbone(backbone)
    x, maps = _check_batch(x, maps)
    steps = _check_steps(steps, MAX_STEPS)
    batch_size = _check_batch_size(batch_size)
    x = x.detach().float()
    n, _, h, w = x.shape
    hw = h * w
    base, base_name = _baseline(x, baseline, blur_sigma)
    # rank[i, p] = position of pixel p in the descending order of map i (stable: ties by index)
    order = torch.argsort(-maps.to(x.device).reshape(n, hw), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw, device=order.device).expand(n, hw))
    counts = torch.tensor([round(k * hw / steps) for k in range(steps + 1)], device=x.device)
    fractions = counts.float() / hw
    passes = n * (steps + 1)
    probs = torch.empty(n, steps + 1)
    with bb.lock, preserved_state(bb.model), torch.inference_mode():
        if target is None:
            targets = _logits(bb.model, x, batch_size).argmax(dim=1)
            passes += n
        else:
            targets = resolve_targets(bb, target, torch.zeros(n, 1))
        # the (image, step) pairs in one flat list, materialised one chunk at a time
        pairs = [(i, k) for i in range(n) for k in range(steps + 1)]
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s : s + batch_size]
            idx = torch.tensor([i for i, _ in chunk])
            ks = torch.tensor([k for _, k in chunk])
            di, dk = idx.to(x.device), ks.to(x.device)
            changed = (rank[di] < counts[dk][:, None]).view(-1, 1, h, w)
            if kind == "deletion":
                inp = torch.where(changed, base[di], x[di])
            else:
                inp = torch.where(changed, x[di], base[di])
            p = _logits(bb.model, inp, batch_size).softmax(dim=1)
            probs[idx, ks] = p.gather(1, targets.to(p.device)[di][:, None])[:, 0].cpu()
    targets = targets.clone()  # a normal tensor, not an inference-mode one
    auc = torch.trapezoid(probs, fractions.cpu(), dim=1)
    return Curve(kind, fractions.cpu(), probs, auc, targets.cpu(), base_name, passes)


def deletion(
    backbone: Backbone | nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Any = None,
    steps: int = 20,
    baseline: str | Tensor = "zero",
    batch_size: int = DEFAULT_BATCH_SIZE,
    blur_sigma: float = 5.0,
) -> Curve:
    """The deletion curve (Petsiuk et al., RISE, 2018, arXiv:1806.07421).

    Step ``k`` (0..steps) replaces the ``round(k*H*W/steps)`` highest-ranked
    pixels of the map (all channels; ties broken by pixel index) with the
    baseline; lower AUC is better.

    Args:
        backbone: a :class:`Backbone` or a bare classifier module.
        x: (N,3,H,W) normalised model input.
        maps: (N,H,W) the maps to test (``exp.maps``), higher = more important.
        target: class(es) whose probability is followed; None: each image's top-1
            on ``x``. Pass ``exp.targets`` to follow the explained class.
        steps: number of steps (at most :data:`MAX_STEPS`); the curve has steps+1 points.
        baseline: ``"zero"`` (0 in normalised space: the dataset mean colour,
            the default), ``"mean"`` (each image's per-channel mean), ``"blur"``
            (a Gaussian-blurred copy) or a tensor broadcastable to ``x``.
        batch_size: images per forward pass.
        blur_sigma: Gaussian sigma in pixels for ``"blur"``.

    Returns:
        A :class:`Curve`. Forward passes: ``N*(steps+1)`` images, plus ``N`` when
        ``target`` is None.
    """
    return _curve("deletion", backbone, x, maps, target, steps, baseline, batch_size, blur_sigma)


def insertion(
    backbone: Backbone | nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Any = None,
    steps: int = 20,
    baseline: str | Tensor = "blur",
    batch_size: int = DEFAULT_BATCH_SIZE,
    blur_sigma: float = 5.0,
) -> Curve:
    """The insertion curve (Petsiuk et al., RISE, 2018, arXiv:1806.07421).

    Starts from the baseline (default: a Gaussian-blurred copy of the image,
    as in the paper) and reveals the original pixels in the order of the map;
    higher AUC is better. Arguments as :func:`deletion`.

    Returns:
        A :class:`Curve`. Forward passes: ``N*(steps+1)`` images, plus ``N`` when
        ``target`` is None.
    """
    return _curve("insertion", backbone, x, maps, target, steps, baseline, batch_size, blur_sigma)


# --------------------------------------------------------------------------- similarity


def _avg_ranks(v: Tensor) -> Tensor:
    """1-D ranks with ties given their average rank (as scipy.stats.rankdata)."""
    _, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2  # 1-based average rank of each group
    return avg[inverse]


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per image of two (N,H,W) maps -> (N,).

    Ties get their average rank. A constant map has no ranking: its
    correlation is defined as 0 (never NaN).
    """
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.shape != b.shape:
        raise ExplainzooError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    out = torch.zeros(a.shape[0])
    for i in range(a.shape[0]):
        ra = _avg_ranks(a[i].flatten().float().cpu())
        rb = _avg_ranks(b[i].flatten().float().cpu())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        den = (ra.square().sum() * rb.square().sum()).sqrt()
        out[i] = float((ra * rb).sum() / den) if den > 0 else 0.0
    return out


def ssim(a: Tensor, b: Tensor, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image of two (N,H,W) maps -> (N,).

    Wang et al., Image Quality Assessment: from Error Visibility to Structural
    Similarity, IEEE TIP 2004: a Gaussian window (sigma 1.5, radius
    ``int(3.5 sigma + 0.5)``), K1=0.01, K2=0.03, population covariances, the
    mean over the positions where the window fits (matches
    ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)``). Maps smaller than the
    window fall back to one global window.
    """
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.shape != b.shape:
        raise ExplainzooError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    x = a.detach().double()[:, None]
    y = b.detach().double()[:, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        mx, my = x.mean(dim=(2, 3)), y.mean(dim=(2, 3))
        vx = (x - mx[..., None, None]).square().mean(dim=(2, 3))
        vy = (y - my[..., None, None]).square().mean(dim=(2, 3))
        cxy = ((x - mx[..., None, None]) * (y - my[..., None, None])).mean(dim=(2, 3))
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        return s[:, 0].float()
    k = _gaussian_kernel1d(sigma, radius, x.device).double()

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float()


# --------------------------------------------------------------------------- sanity check


def _execution_order(model: nn.Module, x: Tensor) -> list[str]:
    """Paths of modules owning parameters, in the order their forward ran (one pass)."""
    owners = {
        m: p for p, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))
    }
    order: list[str] = []
    seen: set[int] = set()

    def hook(mod: nn.Module, args: Any) -> None:
        if id(mod) not in seen:
            seen.add(id(mod))
            order.append(owners[mod])

    handles = [m.register_forward_pre_hook(hook) for m in owners]
    try:
        with preserved_state(model), torch.inference_mode():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    # parameterised modules that did not run (unused heads) cannot change the map: skip them
    return order


def _reinit(module: nn.Module, generator_seed: int) -> None:
    """Re-initialise ``module``'s own parameters (and BatchNorm statistics), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            with torch.no_grad():
                reset()
        else:
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    if p.ndim >= 2:
                        nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                    else:
                        nn.init.normal_(p, std=0.02)


def _cascade_points(total: int, steps: int) -> list[int]:
    """Cumulative module counts: the top module alone first, then evenly to all."""
    if total == 0:
        return []
    steps = min(steps, total)
    if steps == 1:
        return [total]
    pts = [1] + [round(1 + (total - 1) * i / (steps - 1)) for i in range(1, steps)]
    return sorted(set(pts))


def cascading_randomization(
    explainer: Explainer | str,
    backbone: Backbone,
    x: Tensor,
    target: Any = None,
    layer: str | None = None,
    steps: int = 5,
    seed: int = 0,
    original: Tensor | None = None,
) -> SanityResult:
    """The cascading model-randomisation sanity check (Adebayo et al., 2018, arXiv:1810.03292).

    Works on ``copy.deepcopy(backbone.model)`` wrapped with
    ``dataclasses.replace(backbone, model=copy)``: the caller's model is never
    touched. The modules that own parameters are listed in the order they run
    in a forward pass; from the output side (the classifier first) they are
    re-initialised cumulatively (``reset_parameters()``, which also resets
    BatchNorm statistics; seeded by ``seed`` and the module's index). The
    cascade has ``steps`` points: the top module alone, then evenly spaced
    counts up to every module. After each point the map is recomputed for the
    class explained originally and compared with the original map.

    Args:
        explainer: an :class:`Explainer` or a registry name.
        backbone: the backbone explained.
        x: (N,3,H,W) normalised input.
        target: the class(es) explained (None: top-1 of the original model).
        layer: the explainer's layer (None: its default).
        steps: cascade points (at most :data:`MAX_CASCADE_STEPS`).
        seed: seeds every re-initialisation.
        original: the original maps if already computed (saves one explainer call).

    Returns:
        A :class:`SanityResult`. Cost: ``steps`` explainer calls (plus one when
        ``original`` is None) plus one forward pass of one image.
    """
    from . import create_explainer

    if isinstance(explainer, str):
        explainer = create_explainer(explainer)
    if not isinstance(backbone, Backbone):
        backbone = as_backbone(backbone)
    steps = _check_steps(steps, MAX_CASCADE_STEPS, "cascade steps")
    if original is None or target is None:
        exp = explainer.explain(backbone, x, target=target, layer=layer)
        if exp.maps is None:
            raise ExplainzooError(f"{exp.method} returns a grid, not a map: no sanity check")
        original = exp.maps if original is None else original
        target = exp.targets
    path = backbone.resolve_layer(layer) if explainer.uses_layer else None
    with backbone.lock:
        model = copy.deepcopy(backbone.model)
    bb = dataclasses.replace(backbone, model=model)
    top_down = list(reversed(_execution_order(model, x)))
    points = _cascade_points(len(top_down), steps)
    if not points:
        raise ExplainzooError(f"{backbone.name} has no parameters to randomise")
    modules = dict(model.named_modules())
    done = 0
    maps, rhos, ssims, names = [], [], [], []
    for pt in points:
        for j in range(done, pt):
            _reinit(modules[top_down[j]], seed * 100_003 + j)
        done = pt
        m = explainer.explain(bb, x, target=target, layer=path).maps
        assert m is not None
        maps.append(m)
        rhos.append(spearman(original, m))
        ssims.append(ssim(original, m))
        names.append(top_down[pt - 1])
    return SanityResult(
        layers=names,
        randomized=points,
        spearman=torch.stack(rhos),
        ssim=torch.stack(ssims),
        maps=torch.stack(maps),
        original=original.detach().float(),
    )


# --------------------------------------------------------------------------- pointing game


def box_mask(box: Sequence[float], size: tuple[int, int]) -> Tensor:
    """A (H,W) bool mask of the pixels whose centres lie in ``box`` = (x0, y0, x1, y1)."""
    if len(box) != 4:
        raise ExplainzooError(f"a box is (x0, y0, x1, y1), got {tuple(box)!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ExplainzooError(f"box {tuple(box)!r} is empty: need x1 > x0 and y1 > y0")
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def pointing_game(
    maps: Tensor,
    box: Sequence[float] | None = None,
    mask: Tensor | None = None,
    tolerance: int = 0,
) -> Tensor:
    """Does each map's maximum fall inside the box or mask? -> (N,) bool.

    Zhang et al., 2016 (arXiv:1608.00507). The maximum is the first pixel in
    row-major order that attains the map's largest value; ``tolerance`` grows
    the region by that many pixels (the paper uses 15 at 224 px). No forward pass.

    Args:
        maps: (N,H,W) or (H,W).
        box: (x0, y0, x1, y1) in the map's pixel coordinates.
        mask: (H,W) or (N,H,W) boolean region instead of a box.
    """
    if maps.ndim == 2:
        maps = maps[None]
    n, h, w = maps.shape
    if (box is None) == (mask is None):
        raise ExplainzooError("pointing_game needs exactly one of box or mask")
    region = box_mask(box, (h, w)) if box is not None else mask
    assert region is not None
    region = region.bool()
    if region.ndim == 2:
        region = region[None].expand(n, h, w)
    if region.shape != (n, h, w):
        raise ExplainzooError(f"mask of shape {tuple(region.shape)} does not match maps {(n, h, w)}")
    if tolerance > 0:
        region = F.max_pool2d(region[:, None].float(), 2 * tolerance + 1, 1, tolerance)[:, 0] > 0
    flat = torch.nan_to_num(maps.detach().float(), nan=-math.inf).reshape(n, -1)
    idx = flat.argmax(dim=1)
    return region.reshape(n, -1).gather(1, idx[:, None])[:, 0]


# --------------------------------------------------------------------------- chance level


def random_maps(
    n: int,
    size: tuple[int, int],
    resolution: tuple[int, int] | None = None,
    seed: int = 0,
) -> Tensor:
    """Seeded random maps (N,H,W) in [0,1], as smooth as the maps they stand beside.

    Uniform noise at ``resolution`` = (h, w) (an explanation's ``exp.raw``
    resolution: the explained layer's), upsampled to ``size`` bilinearly with
    :func:`explainzoo.explainers.upsample` and normalised like real maps.
    Pixel-wise noise (``resolution`` = ``size``) would scatter the deletions
    and make every real method look worse than chance.
    """
    h, w = resolution or size
    g = torch.Generator().manual_seed(int(seed))
    raw = torch.rand(n, h, w, generator=g)
    return normalize(upsample(raw, tuple(size)))


def random_baseline(
    backbone: Backbone | nn.Module,
    x: Tensor,
    target: Any = None,
    resolution: tuple[int, int] | None = None,
    steps: int = 20,
    trials: int = 3,
    seed: int = 0,
    box: Sequence[float] | None = None,
    mask: Tensor | None = None,
    reference: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, float]:
    """The chance level of every metric, averaged over ``trials`` random maps per image.

    Args:
        resolution: (h, w) of the noise (``tuple(exp.raw.shape[-2:])``); None:
            pixel-wise.
        reference: (N,H,W) real maps: adds ``spearman`` and ``ssim`` between a
            reference map and a random map -- what a sanity check that fully
            decorrelates looks like.
        box, mask: add ``pointing`` (hit rate of random maps).

    Returns:
        ``{"deletion_auc", "insertion_auc"[, "pointing"][, "spearman", "ssim"]}``.
        Cost: ``2 * trials * N * (steps+1)`` images through the model (plus ``N``
        when ``target`` is None).
    """
    bb = as_backbone(backbone)
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ExplainzooError("x must be a (N,3,H,W) tensor")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ExplainzooError(f"trials must be a positive integer, got {trials!r}")
    n, _, h, w = x.shape
    if target is None:
        with bb.lock, preserved_state(bb.model), torch.inference_mode():
            target = _logits(bb.model, x.detach().float(), batch_size).argmax(dim=1)
    dels, ins, pts, rhos, ssims = [], [], [], [], []
    for t in range(trials):
        rm = random_maps(n, (h, w), resolution, seed=seed * 1000 + t)
        dels.append(deletion(bb, x, rm, target, steps, batch_size=batch_size).auc)
        ins.append(insertion(bb, x, rm, target, steps, batch_size=batch_size).auc)
        if box is not None or mask is not None:
            pts.append(pointing_game(rm, box=box, mask=mask).float())
        if reference is not None:
            rhos.append(spearman(reference, rm))
            ssims.append(ssim(reference, rm))
    out = {
        "deletion_auc": float(torch.stack(dels).mean()),
        "insertion_auc": float(torch.stack(ins).mean()),
    }
    if pts:
        out["pointing"] = float(torch.stack(pts).mean())
    if rhos:
        out["spearman"] = float(torch.stack(rhos).mean())
        out["ssim"] = float(torch.stack(ssims).mean())
    return out
