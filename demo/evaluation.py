"""The Evaluate tab: faithfulness of backbone x explainer pairs on one image (a :class:`DemoService` part)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from explainzoo.backbones import ExplainzooError
from explainzoo.backbones.images import load_image
from explainzoo.explainers.deadline import acquire

from . import policy
from .budget import fit_budget
from .cache import LoadedBackbone
from .policy import DEFAULT_EVALUATE_STEPS
from .report import curve_figure, summary
from .report import evaluate as run_evaluation
from .results import EvaluateResult, ProgressFn, quiet

__all__ = ["EVALUATE_COLUMNS", "EvaluateTab"]

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


class EvaluateTab:
    """The Evaluate tab; mixed into :class:`~explainzoo.demo.service.DemoService`."""

    @policy.request_scoped
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
            image: a file path or bytes (decoded by the library's loader), or a PIL image.
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
            ExplainzooError: names not offered, numbers over the caps, more than
                ``limits.max_evaluate_pairs`` backbone x explainer pairs, or an
                unreadable image.
        """
        report = progress or quiet
        lim = self.limits
        names, methods = self._evaluate_pairs(backbones, explainers)
        pairs = len(names) * len(methods)
        n_steps = policy.whole_number(steps, "steps", 1, lim.max_evaluate_steps)
        n_sanity = policy.whole_number(sanity_steps, "sanity steps", 0, lim.max_sanity_steps)
        options = {m: self.parse_options(m, None) for m in methods}
        pil = load_image(image, max_pixels=self.limits.max_pixels)
        loaded: list[LoadedBackbone] = []
        for i, name in enumerate(names):
            report(0.1 * i / len(names), f"loading {name}")
            loaded.append(self._cache.get(name))
        for lb in loaded:  # each method's options within the request budget on every backbone
            with acquire(lb.backbone.lock, lb.backbone.name):
                options = {m: fit_budget(m, o, (), lb.backbone, lb.profile, None, lim) for m, o in options.items()}
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
        return self._evaluate_result(ev, loaded, n_steps, n_sanity, seconds)

    def _evaluate_pairs(self, backbones: Any, explainers: Any) -> tuple[list[str], list[str]]:
        """The offered backbones and map explainers asked for, within the caps on pairs."""
        lim = self.limits
        names = policy.check_list(backbones, self._backbone, lim.max_compare_backbones, "backbones")
        names = names or [self.default_backbone]
        methods = self._explainers(explainers)
        if not methods:
            offered = self.explainer_names("map")
            methods = ["gradcam" if "gradcam" in offered else offered[0]]
        pairs = len(names) * len(methods)
        if pairs > lim.max_evaluate_pairs:
            raise ExplainzooError(
                f"at most {lim.max_evaluate_pairs} backbone x explainer pairs can be evaluated at once, "
                f"got {len(names)} x {len(methods)} = {pairs}; run larger evaluations locally with "
                "`explainzoo evaluate`"
            )
        return names, methods

    @staticmethod
    def _evaluate_result(
        ev: Any, loaded: Sequence[LoadedBackbone], n_steps: int, n_sanity: int, seconds: float
    ) -> EvaluateResult:
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
            figure=_stack(panels),
            warnings=[lb.warning for lb in loaded if lb.warning],
            steps=n_steps,
            sanity_steps=n_sanity,
            seconds=seconds,
        )

def _stack(images: Sequence[Image.Image]) -> Image.Image:
    """Images one above the other on white (the curve panels of several backbones)."""
    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images)), "white")
    top = 0
    for im in images:
        out.paste(im, (0, top))
        top += im.height
    return out
