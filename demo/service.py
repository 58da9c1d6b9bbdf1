"""The demo's logic, free of Gradio: choices, explanations, comparisons, grids.

:class:`DemoService` is what the Gradio app (``demo/app.py``, ``demo/tabs/``)
wires to its widgets and what the tests call directly. It orchestrates; the
library validates. Layers, classes, colormaps, opacities and option values go
to the library as they were sent (converted from the UI's text forms only),
and its :class:`~explainzoo.backbones.ExplainzooError` is the message the user
sees. What is the demo's own is *hosting policy* (:mod:`.policy`): the offered
backbones and explainers, caps on counts, sizes and costly options. Images go
through the library's safe loader (:mod:`explainzoo.backbones.images`).

Backbones are loaded once (pretrained weights when reachable offline, else
random init with a visible warning) and kept in a bounded, thread-safe LRU
cache (:mod:`.cache`). Explanations on one backbone are serialised by its
lock, whose waits the request deadline bounds (``lock_wait``: "busy, try again");
every tab method runs under a request deadline that the client's disconnection
cancels (:func:`.policy.request_scoped`, :attr:`DemoService.cancel_token`),
and an explainer call is bounded as a whole on its backbone
(:func:`.budget.fit_budget`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError, PluginLoadError, preserved_state
from explainzoo.backbones.errors import unknown
from explainzoo.backbones.images import load_image
from explainzoo.explainers import (
    Explanation,
    create_explainer,
    explainer_class,
    explainer_failures,
    list_explainers,
)
from explainzoo.explainers import targets as T
from explainzoo.explainers.deadline import acquire
from explainzoo.explainers.render import overlay

from . import display, policy
from .budget import fit_budget
from .cache import BackboneCache, LoadedBackbone, load_entry
from .comparisons import CompareTabs
from .evaluation import EVALUATE_COLUMNS, EvaluateTab
from .grids import GridTabs
from .policy import (
    AUTO_TARGET,
    CAPTION_STEPS,
    COLORMAPS,
    COST_CAPS,
    COST_FLOORS,
    DEFAULT_BACKBONE,
    DEFAULT_COMPARE_EXPLAINERS,
    DEFAULT_EVALUATE_STEPS,
    DEFAULT_LAYER,
    Limits,
)
from .results import (
    SCORES,
    CompareResult,
    EvaluateResult,
    ExplainResult,
    GalleryItem,
    GridResult,
    Prediction,
    ProgressFn,
    class_label,
    explained_class,
    quiet,
)

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

def configure_offline_hub() -> None:
    """Make pretrained-weight look-ups fail fast instead of trying the network.

    Sets ``HF_HUB_OFFLINE=1`` unless the environment already says otherwise; if
    ``huggingface_hub`` was imported before (it reads the variable once, at
    import), its constant is brought in line with the environment.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    offline = os.environ["HF_HUB_OFFLINE"].strip().lower() in ("1", "true", "yes", "on")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and offline:
        constants.HF_HUB_OFFLINE = True


def _short(name: str) -> str:
    return name.split(":", 1)[-1]


class DemoService(CompareTabs, EvaluateTab, GridTabs):
    """The demo's operations, one method per tab; hosting policy on top of the library.

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
        names = policy.parse_backbone_list(backbones)
        self.backbones: tuple[str, ...] = tuple(names)
        if default_backbone is None:
            default_backbone = DEFAULT_BACKBONE if DEFAULT_BACKBONE in names else names[0]
        if default_backbone not in names:
            raise unknown("backbone", default_backbone, names, "(not among the offered backbones)")
        self.default_backbone = default_backbone
        self.pretrained = pretrained
        self.limits = limits or Limits.from_env()
        #: Called at the start of each request (in its thread): a cancellation
        #: token for its :class:`~explainzoo.explainers.deadline.Deadline`, or
        #: None. The Gradio app sets one that fires when the client has gone
        #: (:func:`explainzoo.demo.exposure.queue_cancel_token`).
        self.cancel_token: Callable[[], Any] = lambda: None
        self._cache = BackboneCache(self._load, cache_size)
        self._kinds: dict[str, str | None] = {}
        self._kinds_lock = threading.Lock()

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
            kind = cls.kind
        with self._kinds_lock:
            self._kinds[name] = kind
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
        cls = explainer_class(self._explainer(name, None))
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

    def alias_choices(self, backbone: str) -> list[str]:
        """The layer aliases ``backbone`` answers (``conv1``, ``last``, ``stage1..N``)."""
        return list(self.load(backbone).backbone.layers)

    def class_choices(
        self, backbone: str, predictions: Sequence[Prediction] = (), all_classes: bool = False
    ) -> list[tuple[str, str]]:
        """(label, value) target choices: top-1, the given predictions, optionally every class.

        Any class can be typed by name or index as well (the library resolves
        it), so the UI lists only the predictions by default.
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

    def default_compare_explainers(self) -> list[str]:
        """The explainers preselected in Compare explainers: fast ones first."""
        available = self.explainer_names("map")
        picked = [m for m in DEFAULT_COMPARE_EXPLAINERS if m in available]
        picked += [m for m in available if m not in picked]
        return picked[: self.limits.max_compare_explainers]

    # -- hosting policy: what this demo offers ---------------------------------------------

    def _backbone(self, name: Any) -> str:
        return policy.offered(name, self.backbones, "backbone", self.limits)

    def _explainer(self, name: Any, kind: str | None) -> str:
        name = policy.text(name, "explainer", self.limits)
        offered = self.explainer_names(kind)
        if name not in offered and kind == "map" and name in self.explainer_names("grid"):
            raise ExplainzooError(f"{name} draws a tile grid, not a map: use the Filters or Activations tab")
        return policy.offered(name, offered, "explainer", self.limits, f"(available: {', '.join(offered)})")

    def _explainers(self, values: Any) -> list[str]:
        check = lambda m: self._explainer(m, "map")  # noqa: E731
        return policy.check_list(values, check, self.limits.max_compare_explainers, "explainers")

    def parse_options(self, explainer: str, options: Any) -> dict[str, Any]:
        """Explainer options from ``"key=value, ..."`` or a mapping, with the demo's caps applied.

        The library checks names, types and bounds (``create_explainer``); on
        top of that the options that declare a cost are capped
        (:func:`.policy.cap_options`): a larger value is refused and a larger
        default is lowered to the cap.
        """
        given = policy.split_options(options, self.limits)
        config = create_explainer(explainer, **given).config
        return policy.cap_options(explainer, explainer_class(explainer), config, given, self.limits)

    # -- the UI's forms -> the library's ------------------------------------------------

    def _layer(self, lb: LoadedBackbone, layer: Any, uses_layer: bool) -> str | None:
        """None for the explainer's default (or a method that takes no layer), else the
        layer as sent, once the library has resolved it."""
        if layer is None or (isinstance(layer, str) and layer.strip() in ("", DEFAULT_LAYER)):
            return None
        layer = policy.text(layer, "layer", self.limits)
        if not uses_layer:
            return None  # input-level methods take no layer: the choice does not apply
        lb.backbone.resolve_layer(layer)
        return layer

    def resolve_target(self, bb: Backbone, target: Any) -> int | None:
        """None for the top-1 prediction, else the class index the library resolves.

        The UI's forms are read first: ``"top-1"`` or empty, a choice's label
        typed back (``"281: tabby, tabby cat"``), a JSON number.
        """
        if isinstance(target, str):
            target = target.strip()
            if not target or target == AUTO_TARGET:
                return None
            target = policy.text(target, "target class", self.limits)
            head, sep, _ = target.partition(":")
            if sep and head.strip().isdigit():
                target = head.strip()
        elif isinstance(target, np.integer) or (isinstance(target, float) and target.is_integer()):
            target = int(target)
        return None if target is None else bb.class_index(target)

    def score_target(self, bb: Backbone, target: Any = None, contrast: Any = None, score: Any = "logit") -> Any:
        """The target the UI's three controls spell, for the library (:mod:`explainzoo.explainers.targets`).

        ``target`` as :meth:`resolve_target`; ``contrast``: a second class
        ("why the target rather than this one"; None, empty or ``"none"``: no
        contrast); ``score``: ``"logit"`` or ``"probability"`` (softmax).
        """
        if score not in SCORES:
            raise ExplainzooError(f"score must be one of {list(SCORES)}, got {score!r}")
        base = self.resolve_target(bb, target)
        other = None
        if contrast is not None and not (isinstance(contrast, str) and contrast.strip().lower() in ("", "none")):
            other = self.resolve_target(bb, contrast)
        if other is None:
            return T.Probability(base) if score == "probability" else base
        if score == "logit":
            return T.Contrast(base, other)
        names = (class_label(bb, base) if base is not None else "top-1", class_label(bb, other))

        def probability_contrast(out: Tensor) -> Tensor:
            p = out.softmax(dim=1)
            a = p.argmax(dim=1) if base is None else torch.full_like(p[:, 0], base, dtype=torch.long)
            return p.gather(1, a[:, None])[:, 0] - p[:, other]

        return T.Custom(probability_contrast, f"p({names[0]}) - p({names[1]}) (probability contrast)")

    def _render_args(self, cmap: Any, alpha: Any) -> tuple[str, Any]:
        """Colormap and opacity, checked by the library's renderer before any work is done."""
        cmap = policy.text(cmap, "colormap", self.limits)
        overlay(np.zeros((1, 1, 3), dtype=np.uint8), torch.zeros(1, 1), cmap=cmap, alpha=alpha)
        return cmap, alpha

    # -- backbones -----------------------------------------------------------------------

    def load(self, backbone: Any) -> LoadedBackbone:
        """The cached backbone (one of the offered ones)."""
        return self._cache.get(self._backbone(backbone))

    @property
    def cache(self) -> BackboneCache:
        return self._cache

    def _load(self, name: str) -> LoadedBackbone:
        return load_entry(name, self.pretrained, self.limits.max_grid_pixels)

    @staticmethod
    def _top(bb: Backbone, probs: Tensor, k: int = 5) -> list[Prediction]:
        top = torch.topk(probs, min(k, probs.numel()))
        return [Prediction(int(i), class_label(bb, int(i)), float(p)) for p, i in zip(top.values, top.indices)]

    @classmethod
    def predict(cls, bb: Backbone, x: Tensor, k: int = 5) -> list[Prediction]:
        """Top-``k`` classes with softmax probabilities (one forward, under the backbone's lock)."""
        with bb.lock, preserved_state(bb.model), torch.inference_mode():
            logits = bb.model(x)
        return cls._top(bb, torch.softmax(logits[0].float(), dim=0), k)

    def _predictions(self, bb: Backbone, x: Tensor, exp: Explanation) -> list[Prediction]:
        """The top-5 of the explainer's own pass when the result carries it, else one forward."""
        probs = exp.probabilities
        if probs is None:  # a method that made no clean pass of its own
            return self.predict(bb, x)
        return self._top(bb, probs[0].detach().float().cpu())

    # -- shared steps --------------------------------------------------------------------

    def _run_map(
        self,
        lb: LoadedBackbone,
        image: Image.Image,
        explainer: str,
        layer: str | None,
        target: Any,
        options: Mapping[str, Any],
        given: Any = (),
    ) -> tuple[Explanation, Tensor, list[Prediction], float]:
        """One explainer call on ``lb`` holding its lock, its options within
        the request budget (``given``: the option names the caller set; the others may be lowered)."""
        bb = lb.backbone
        shown = bb.preprocessing.resize_crop(image)
        x = bb.preprocessing.normalize(shown)[None].float()
        with acquire(bb.lock, bb.name):  # waits at most the request's lock_wait
            opts = fit_budget(explainer, options, given, bb, lb.profile, layer, self.limits)
            t0 = time.perf_counter()
            exp = create_explainer(explainer, **opts).explain(bb, x, target=target, layer=layer)
            seconds = time.perf_counter() - t0
            if exp.maps is None:
                raise ExplainzooError(f"{explainer} returned a tile grid, not a map: use the Activations tab")
            return exp, shown, self._predictions(bb, x, exp), seconds

    # -- tabs ------------------------------------------------------------------------------

    @policy.request_scoped
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
        outlier_perc: Any = display.OUTLIER_PERC,
        contrast: Any = None,
        score: Any = "logit",
    ) -> ExplainResult:
        """The Explain tab: one image, one backbone, one explainer.

        The model runs once for the prediction and the map when the method's
        result carries its logits (``Explanation.logits``).

        Args:
            image: a file path or bytes (decoded by the library's loader), or a PIL image.
            backbone: one of :attr:`backbones`.
            explainer: a map explainer (``explainer_names("map")``).
            layer: an alias or module path; None or ``"default"`` for the
                explainer's default. Ignored by input-level methods (saliency).
            target: None / ``"top-1"`` (the prediction), a class index or name.
            cmap, alpha: colormap and opacity of the overlay.
            options: explainer options as ``"key=value, ..."`` or a mapping (capped).
            progress: optional ``progress(fraction, message)`` callback.
            outlier_perc: percent of a gradient map's top values clipped in the
                drawings (:mod:`.display`; CAMs are never clipped).
            contrast: a second class: explain "target rather than contrast" (None: no contrast).
            score: ``"logit"`` or ``"probability"``: what is explained (:meth:`score_target`).
        """
        report = progress or quiet
        name = self._backbone(backbone)
        method = self._explainer(explainer, "map")
        cmap, alpha = self._render_args(cmap, alpha)
        clip = display.outlier_perc_for(explainer_class(method), display.check_outlier_perc(outlier_perc))
        opts = self.parse_options(method, options)
        given = set(policy.split_options(options, self.limits))
        pil = load_image(image, max_pixels=self.limits.max_pixels)
        report(0.1, f"loading {name}")
        lb = self._cache.get(name)
        bb = lb.backbone
        layer_arg = self._layer(lb, layer, explainer_class(method).uses_layer)
        tgt = self.score_target(bb, target, contrast, score)
        report(0.4, f"running {method} on {name}")
        exp, shown, preds, seconds = self._run_map(lb, pil, method, layer_arg, tgt, opts, given)
        report(0.9, "rendering")
        t = explained_class(exp, preds)
        raw = (exp.raw if exp.raw is not None else exp.maps)[0].detach().float().cpu()  # type: ignore[index]
        return ExplainResult(
            overlay=overlay(shown, display.display_maps(exp, clip), cmap=cmap, alpha=alpha),
            raw=display.raw_image(raw, tuple(shown.shape[-2:]), cmap, clip),
            map=exp.maps[0].detach().cpu().numpy(),  # type: ignore[index]
            predictions=preds,
            target=t,
            target_label=class_label(bb, t),
            score=float(exp.scores[0]) if exp.scores is not None else float("nan"),
            layer=exp.layer,
            backbone=name,
            explainer=method,
            weights=bb.weights,
            pretrained=bb.pretrained,
            warning=lb.warning,
            seconds=seconds,
            raw_map=torch.nan_to_num(raw, nan=0.0).numpy(),
            outlier_perc=clip,
            target_description=exp.target_description or "",
        )

