"""The Evaluate tab: deletion / insertion AUC and sanity checks of backbone x explainer pairs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..files import png_file
from ..policy import DEFAULT_EVALUATE_STEPS
from ..results import EvaluateResult
from .common import TabContext, image_input, progress_fn, user_errors

TITLE = "Evaluate"


def _notes(result: EvaluateResult) -> str:
    """How to read the Evaluate table, the settings used, and warnings."""
    parts = [
        f"{result.steps} deletion / insertion steps"
        + (f", {result.sanity_steps} sanity steps" if result.sanity_steps else ", no sanity check")
        + f", {result.seconds:.1f} s. **Deletion AUC**: the class probability as the most salient pixels "
        "are removed first (lower is better); **insertion AUC**: as they are revealed on a blurred copy "
        "(higher is better); the **random** row is chance (a smooth random map). **Sanity**: Spearman / SSIM "
        "between the map and the maps of progressively re-initialised models (lower: the map depends on "
        "the weights, as it should)."
    ]
    parts += [f"⚠️ {w}" for w in dict.fromkeys(result.warnings)]
    return "\n\n".join(parts)


def build(ctx: TabContext) -> None:
    service = ctx.service
    image = image_input(ctx)
    limits = service.limits
    with gr.Row():
        with gr.Column(scale=1):
            backbones = gr.CheckboxGroup(
                list(service.backbones),
                value=[ctx.default],
                label=f"Backbones (at most {limits.max_compare_backbones})",
            )
            methods = gr.CheckboxGroup(
                ctx.map_explainers,
                value=[m for m in ("gradcam", "saliency") if m in ctx.map_explainers] or [ctx.default_method],
                label=f"Explainers (at most {limits.max_evaluate_pairs} backbone x explainer pairs)",
            )
            steps = gr.Slider(
                1,
                limits.max_evaluate_steps,
                value=min(DEFAULT_EVALUATE_STEPS, limits.max_evaluate_steps),
                step=1,
                label="Deletion / insertion steps",
                info="each pair costs 2 x (steps + 1) forward passes",
            )
            sanity = gr.Slider(
                0,
                limits.max_sanity_steps,
                value=0,
                step=1,
                label="Sanity-check steps (cascading randomisation; 0: off)",
                info="each costs one explainer run per pair",
            )
            button = gr.Button("Evaluate", variant="primary", elem_id="ev-button")
        with gr.Column(scale=2):
            table = gr.Dataframe(label="Faithfulness", interactive=False, wrap=True)
            curves = gr.Image(label="Deletion and insertion curves", type="pil", format="png")
            notes = gr.Markdown(elem_id="ev-notes")

    def run(
        image: str | bytes | None,
        backbones: list[str],
        explainers: list[str],
        steps: float,
        sanity_steps: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[Any, Any, str]:
        with user_errors():
            result = service.evaluate(image, backbones, explainers, steps, sanity_steps, progress_fn(progress))
        return {"headers": result.headers, "data": result.rows}, png_file(result.figure), _notes(result)

    button.click(
        run,
        [image, backbones, methods, steps, sanity],
        [table, curves, notes],
        api_name="evaluate",
        **ctx.model_event,
    )
