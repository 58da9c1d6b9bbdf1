"""Compare backbones and Compare explainers: captioned overlays side by side (a :class:`DemoService` part)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError
from explainzoo.backbones.images import load_image
from explainzoo.explainers import Explanation, explainer_class
from explainzoo.explainers.metrics import deletion, random_maps
from explainzoo.explainers.render import overlay

from . import display, policy
from .policy import CAPTION_STEPS, DEFAULT_BACKBONE
from .results import CompareResult, GalleryItem, ProgressFn, class_label, explained_class, quiet

__all__ = ["CompareTabs"]


def _short(name: str) -> str:
    return name.split(":", 1)[-1]


class CompareTabs:
    """The two comparison tabs; mixed into :class:`~explainzoo.demo.service.DemoService`."""

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
        d = deletion(bb, x, exp.maps, exp.target, CAPTION_STEPS)
        res = tuple(exp.raw.shape[-2:]) if exp.raw is not None else None
        key = (bb.name, res, int(d.targets[0]))
        if key not in chance:
            rm = random_maps(1, tuple(x.shape[-2:]), res, seed=0)
            chance[key] = deletion(bb, x, rm, d.targets, CAPTION_STEPS).mean_auc
        return f"deletion AUC {d.mean_auc:.3f} (random {chance[key]:.3f}, lower is better)"

    def _gallery_item(
        self, shown: Tensor, exp: Explanation, caption: str, note: str, cmap: str, alpha: Any
    ) -> GalleryItem:
        caption = f"{caption} | {note}" if note else caption
        drawn = display.display_maps(exp, display.outlier_perc_for(explainer_class(exp.method)))
        return GalleryItem(overlay(shown, drawn, cmap=cmap, alpha=alpha), caption, exp.maps[0].numpy())  # type: ignore[index]

    @policy.request_scoped
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
        target: Any = None,
        contrast: Any = None,
        score: Any = "logit",
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
            target, contrast, score: the same score for every backbone
                (:meth:`score_target`): resolved against each backbone's labels;
                one without those classes is reported in ``errors``.
        """
        report = progress or quiet
        method = self._explainer(explainer, "map")
        names = policy.check_list(backbones, self._backbone, self.limits.max_compare_backbones, "backbones")
        names = names or [self.default_backbone]
        cmap, alpha = self._render_args(cmap, alpha)
        alias = policy.shared_alias(layer, self.limits)
        faithful = policy.flag(faithfulness, "faithfulness")
        opts = self.parse_options(method, None)
        pil = load_image(image, max_pixels=self.limits.max_pixels)
        lyr = alias if explainer_class(method).uses_layer else None
        items: list[GalleryItem] = []
        errors: dict[str, str] = {}
        warnings: list[str] = []
        chance: dict[tuple[Any, ...], float] = {}
        for i, name in enumerate(names):
            report(i / len(names), f"{method} on {name} ({i + 1}/{len(names)})")
            try:
                lb = self._cache.get(name)
                tgt = self.score_target(lb.backbone, target, contrast, score)
                exp, shown, preds, seconds = self._run_map(lb, pil, method, lyr, tgt, opts)
                note = self._deletion_caption(lb.backbone, shown, exp, chance) if faithful else ""
            except ExplainzooError as exc:
                errors[name] = str(exc)
                continue
            top = preds[0]
            caption = (
                f"{_short(name)}: {top.label.split(',')[0]} ({top.prob:.0%}) | "
                f"layer {exp.layer or 'input'} | {seconds * 1000:.0f} ms"
            )
            if tgt is not None:
                caption += f" | explains {exp.target_description}"
            if note:
                caption += f" | {note}"
            if lb.warning:
                caption += " | RANDOM INIT"
                warnings.append(lb.warning)
            items.append(self._gallery_item(shown, exp, caption, "", cmap, alpha))
        if not items:
            raise ExplainzooError(
                "no backbone could be explained: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
            )
        return CompareResult(items, errors, warnings)

    @policy.request_scoped
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
        contrast: Any = None,
        score: Any = "logit",
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
        report = progress or quiet
        name = self._backbone(backbone)
        methods = self._explainers(explainers) or self.default_compare_explainers()
        cmap, alpha = self._render_args(cmap, alpha)
        faithful = policy.flag(faithfulness, "faithfulness")
        pil = load_image(image, max_pixels=self.limits.max_pixels)
        report(0.05, f"loading {name}")
        lb = self._cache.get(name)
        bb = lb.backbone
        tgt = self.score_target(bb, target, contrast, score)
        items: list[GalleryItem] = []
        errors: dict[str, str] = {}
        chance: dict[tuple[Any, ...], float] = {}
        for i, method in enumerate(methods):
            report(i / len(methods), f"{method} ({i + 1}/{len(methods)})")
            try:
                lyr = self._layer(lb, layer, explainer_class(method).uses_layer)
                opts = self.parse_options(method, None)
                exp, shown, preds, seconds = self._run_map(lb, pil, method, lyr, tgt, opts)
                note = self._deletion_caption(bb, shown, exp, chance) if faithful else ""
            except ExplainzooError as exc:
                errors[method] = str(exc)
                continue
            label = class_label(bb, explained_class(exp, preds)).split(",")[0]
            caption = f"{method} | layer {exp.layer or 'input'} | class {label} | {seconds * 1000:.0f} ms"
            items.append(self._gallery_item(shown, exp, caption, note, cmap, alpha))
        if not items:
            raise ExplainzooError("no explainer succeeded: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
        return CompareResult(items, errors, [lb.warning] if lb.warning else [])
