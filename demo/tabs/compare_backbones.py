"""The Compare backbones tab: one image, one explainer, several backbones side by side."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..files import png_file
from ..policy import DEFAULT_LAYER
from .common import (
    TabContext,
    compare_notes,
    downloads,
    gallery_files,
    image_input,
    progress_fn,
    render_controls,
    user_errors,
)

TITLE = "Compare backbones"


def build(ctx: TabContext) -> None:
    service = ctx.service
    image = image_input(ctx)
    aliases = service.alias_choices(ctx.default)  # the default backbone's aliases: conv1, last, stageN
    with gr.Row():
        with gr.Column(scale=1):
            method = gr.Dropdown(ctx.map_explainers, value=ctx.default_method, label="Explainer")
            backbones = gr.CheckboxGroup(
                list(service.backbones),
                value=[b for b in service.backbones if "efficientnet_lite" in b][:3] or [ctx.default],
                label=f"Backbones (at most {service.limits.max_compare_backbones})",
            )
            layer = gr.Dropdown(
                [("default for the method", DEFAULT_LAYER), *[(a, a) for a in aliases]],
                value=DEFAULT_LAYER,
                label="Layer alias (every backbone answers these)",
            )
            cmap, alpha = render_controls()
            faithful = gr.Checkbox(value=True, label=ctx.faithfulness_label)
            button = gr.Button("Compare backbones", variant="primary", elem_id="cb-button")
        with gr.Column(scale=2):
            gallery = gr.Gallery(
                label="Overlays", columns=4, height="auto", type="pil", format="png", elem_id="compare-gallery"
            )
            notes = gr.Markdown(elem_id="cb-notes")
            with gr.Accordion("Downloads: each overlay's PNG and its map (.npy)", open=False):
                files = downloads("Overlays and maps")
    pending = gr.State()

    def run(
        image: str | bytes | None,
        explainer: str,
        backbones: list[str],
        layer: str,
        cmap: str,
        alpha: float,
        faithfulness: bool,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[list[tuple[Any, str]], str, list[str]]:
        with user_errors():
            result = service.compare_backbones(
                image, explainer, backbones, layer, cmap, alpha, progress_fn(progress), faithfulness
            )
            gallery = [(png_file(i.image), i.caption) for i in result.items]
            return gallery, compare_notes(result), gallery_files(result, explainer)

    button.click(
        run,
        [image, method, backbones, layer, cmap, alpha, faithful],
        [gallery, notes, pending],
        api_name="compare_backbones",
        **ctx.model_event,
    ).success(lambda f: f, [pending], [files], api_visibility="private", show_progress="hidden")
