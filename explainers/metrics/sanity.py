"""The cascading model-randomisation sanity check (Adebayo et al., Sanity
Checks for Saliency Maps, NeurIPS 2018, https://arxiv.org/abs/1810.03292).

The parameterised modules of a deep copy of the model are re-initialised from
the output side, cumulatively; the map is recomputed after each step and
compared with the original map (Spearman rank correlation and SSIM). A method
that *passes* decorrelates (scores fall towards 0). Cost: ``1 + cascade_steps``
explainer calls plus one forward pass (recording the execution order).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, preserved_state

from ..base import Explainer, as_backbone
from ..mechanics import temporary_hook
from .curves import check_count
from .similarity import spearman, ssim

__all__ = ["MAX_CASCADE_STEPS", "SanityResult", "cascading_randomization"]

#: Server-side cap on the number of cascading-randomisation steps.
MAX_CASCADE_STEPS = 12


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

    with ExitStack() as hooks:
        for m in owners:
            hooks.enter_context(temporary_hook(m, hook, kind="forward_pre"))
        with preserved_state(model), torch.inference_mode():
            model(x[:1])
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
    from .. import create_explainer

    if isinstance(explainer, str):
        explainer = create_explainer(explainer)
    if not isinstance(backbone, Backbone):
        backbone = as_backbone(backbone)
    steps = check_count(steps, "cascade steps", MAX_CASCADE_STEPS)
    if original is None or target is None:
        exp = explainer.explain(backbone, x, target=target, layer=layer)
        if exp.kind != "map" or exp.maps is None:
            raise ExplainzooError(f"{exp.method} returns a grid, not a map: no sanity check")
        original = exp.maps if original is None else original
        target = exp.targets
    path = backbone.resolve_layer(layer) if explainer.uses_layer else None
    with backbone.lock:
        model = copy.deepcopy(backbone.model)
    top_down = list(reversed(_execution_order(model, x)))
    points = _cascade_points(len(top_down), steps)
    if not points:
        raise ExplainzooError(f"{backbone.name} has no parameters to randomise")
    bb = dataclasses.replace(backbone, model=model)
    return _cascade(explainer, bb, x, target, path, top_down, points, seed, original)


def _cascade(
    explainer: Explainer, bb: Backbone, x: Tensor, target: Any, path: str | None, top_down: list[str],
    points: list[int], seed: int, original: Tensor,
) -> SanityResult:
    """Re-initialise ``bb.model``'s modules ``top_down`` up to each point and compare the maps."""
    modules = dict(bb.model.named_modules())
    done = 0
    maps, rhos, ssims, names = [], [], [], []
    for pt in points:
        for j in range(done, pt):
            _reinit(modules[top_down[j]], seed * 100_003 + j)
        done = pt
        m = explainer.explain(bb, x, target=target, layer=path).maps
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
