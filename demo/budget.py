"""The request budget: what one explainer call may cost on a backbone, as a whole.

Per-option caps (:func:`explainzoo.demo.policy.cap_options`) bound each
costly option; this module bounds their sum on the backbone at hand:

* **work**: ``Cost.total`` (the library's estimate of passes x images, from
  what the options declare) x the backbone's FLOPs per image
  (:class:`~explainzoo.demo.cache.BackboneProfile`, counted once), a pass that
  runs backward counted ``Limits.gradient_factor`` times, must stay under
  ``Limits.max_request_gflops``;
* **memory**: ``Cost.batch`` (images in one pass) x one image's activations
  (all module outputs when the method runs backward: autograd keeps them; a
  few of the largest when it runs forward only) must stay under
  ``Limits.max_chunk_mb``.

A default over budget is lowered to the largest value that fits ("chunk it
down"); a value the caller gave is refused with one line naming it, its
value and the value that fits, e.g. ``smoothgrad on timm:resnet50 needs ~65
passes with a backward (this demo's budget there: 40): lower samples (now 64)
to 39``.

Whether a method's passes run backward is read from what the class declares
(:func:`takes_gradients`), never taken from its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from explainzoo.backbones import Backbone, ExplainzooError
from explainzoo.explainers import create_explainer, explainer_class

if TYPE_CHECKING:
    from .cache import BackboneProfile
    from .policy import Limits

__all__ = ["chunk_bytes", "fit_budget", "pass_flops", "takes_gradients"]

def takes_gradients(cls: type) -> bool:
    """Whether a method's passes run backward (they cost about 3 forward passes each).

    From what the class declares, never from its name: its ``needs_gradient``
    when it has one (the CAM template), else whether any option is declared
    with ``cost="gradients"`` (IG steps, SmoothGrad samples). A method with
    neither makes forward passes only, or a single backward (saliency), which
    the budget counts as a forward.
    """
    declared = getattr(cls, "needs_gradient", None)
    if isinstance(declared, bool):
        return declared
    return any(getattr(o, "cost", None) == "gradients" for o in getattr(cls, "options", {}).values())


def pass_flops(profile: BackboneProfile, gradient: bool, limits: Limits) -> float:
    """FLOPs one pass of one image costs: forward, times ``gradient_factor`` with a backward."""
    return profile.flops * (limits.gradient_factor if gradient else 1.0)


def chunk_bytes(profile: BackboneProfile, gradient: bool) -> int:
    """Activation bytes one image holds in a chunk (all outputs with a backward, else 3 of the largest)."""
    return profile.activation_bytes if gradient else 3 * profile.largest_bytes


def _estimate(explainer: str, options: Mapping[str, Any], bb: Backbone, layer: str | None) -> Any:
    return create_explainer(explainer, **options).estimate(bb, None, layer)


def _search(ok: Callable[[int], bool], lo: int, hi: int, smallest: bool) -> int | None:
    """The largest (or, ``smallest``, the smallest) v in lo..hi with ``ok(v)``, by bisection."""
    if lo > hi or not ok(lo if smallest is False else hi):
        return None
    while lo < hi:
        mid = (lo + hi + (0 if smallest else 1)) // 2
        if ok(mid):
            lo, hi = (lo, mid) if smallest else (mid, hi)
        else:
            lo, hi = (mid + 1, hi) if smallest else (lo, mid - 1)
    return lo


def fit_budget(
    explainer: str,
    options: Mapping[str, Any],
    given: Any,
    bb: Backbone,
    profile: BackboneProfile,
    layer: str | None,
    limits: Limits,
) -> dict[str, Any]:
    """``options`` within the request budget on ``bb`` (see the module docstring).

    Args:
        explainer: the registered name; ``options`` its capped options.
        given: the option names the caller set (the others may be lowered).
        profile: the backbone's measured cost per image.
        layer: as passed to ``explain`` (None: the method's default).

    Raises:
        ExplainzooError: over budget and the option to lower was given (or
            there is none); the message names it, its value and what fits.
    """
    cls = explainer_class(explainer)
    gradient = takes_gradients(cls)
    out = dict(create_explainer(explainer, **options).config)  # every option, as the call will see it
    work = pass_flops(profile, gradient, limits)
    budget = limits.max_request_gflops * 1e9 / work
    cost = _estimate(explainer, out, bb, layer)
    if cost.total > budget:
        out = _lower(explainer, out, given, bb, layer, cost, budget, gradient)
    per_image = chunk_bytes(profile, gradient)
    cap = limits.max_chunk_mb * 2**20
    cost = _estimate(explainer, out, bb, layer)
    if cost.batch * per_image > cap:
        out = _shrink_chunk(explainer, out, given, bb, cost, per_image, cap)
    return out


def _lower(
    explainer: str, out: dict[str, Any], given: Any, bb: Backbone, layer: str | None,
    cost: Any, budget: float, gradient: bool,
) -> dict[str, Any]:
    key = cost.costliest()
    what = f"{explainer} on {bb.name} needs ~{cost.total:.0f} passes{' with a backward' if gradient else ''}"
    what += f" (this demo's budget there: {math.floor(budget)})"
    if key is None:
        raise ExplainzooError(f"{what}: pick a smaller backbone or run it locally with `explainzoo explain`")
    option = explainer_class(explainer).options[key]
    value = out[key]
    inverse = option.cost == "inverse"

    def ok(v: int) -> bool:
        return _estimate(explainer, {**out, key: v}, bb, layer).total <= budget

    if inverse:
        side = max(bb.input_size)
        fit = _search(ok, max(int(value), 1), side, smallest=True)
    else:
        top = int(value) if value != option.unbounded else int(cost.by_option.get(key, 1) or 1)
        low = max(int(math.ceil(option.low)) if option.low is not None else 1, 1)
        fit = _search(ok, low, min(top, 1 << 20), smallest=False)
    verb = "raise" if inverse else "lower"
    if key in given or fit is None:
        hint = f"{verb} {key} (now {value})" + (f" to {fit}" if fit is not None else "")
        raise ExplainzooError(f"{what}: {hint}, or pick a smaller backbone")
    out[key] = fit
    return out


def _shrink_chunk(
    explainer: str, out: dict[str, Any], given: Any, bb: Backbone, cost: Any, per_image: int, cap: float
) -> dict[str, Any]:
    keys = [k for k, o in explainer_class(explainer).options.items() if o.cost == "batch"]
    fit = max(1, int(cap // max(per_image, 1)))
    need = cost.batch * per_image / 2**20
    what = (
        f"one chunk of {cost.batch} images of {explainer} on {bb.name} needs ~{need:.0f} MB "
        f"of activations (this demo's budget: {cap / 2**20:.0f} MB)"
    )
    if not keys:
        raise ExplainzooError(f"{what}: pick a smaller backbone")
    named = [k for k in keys if k in given]
    if named:
        raise ExplainzooError(f"{what}: lower {named[0]} (now {out[named[0]]}) to {fit}")
    for k in keys:
        out[k] = min(int(out[k]), fit)
    return out
