"""The Compare explainers tab: one image, one backbone, several explainers side by side."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..files import png_file
from ..policy import DEFAULT_LAYER
from .common import (
    TabContext,
    backbone_dropdown,
    compare_notes,
    downloads,
    gallery_files,
    image_input,
    layer_dropdown,
    layer_update,
    progress_fn,
    render_controls,
    user_errors,
    wire_backbone,
)

TITLE = "Compare explainers"


def build(ctx: TabContext) -> None:
    service = ctx.service
    image = image_input(ctx)
    with gr.Row():
        with gr.Column(scale=1):
            backbone, status = backbone_dropdown(ctx)
            methods = gr.CheckboxGroup(
                ctx.map_explainers,
                value=service.default_compare_explainers(),
                label=f"Explainers (at most {service.limits.max_compare_explainers})",
            )
            layer, layers = layer_dropdown(
                ctx, label="Layer (for layer-based methods)", default_label="default for each method"
            )
            cmap, alpha = render_controls()
            faithful = gr.Checkbox(value=True, label=ctx.faithfulness_label)
            button = gr.Button("Compare explainers", variant="primary", elem_id="ce-button")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Side by side", columns=3, height="auto", type="pil", format="png")
            notes = gr.Markdown(elem_id="ce-notes")
            with gr.Accordion("Downloads: each overlay's PNG and its map (.npy)", open=False):
                files = downloads("Overlays and maps")
    pending = gr.State()

    def run(
        image: str | bytes | None,
        backbone: str,
        explainers: list[str],
        layer: str,
        cmap: str,
        alpha: float,
        faithfulness: bool,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[list[tuple[Any, str]], str, list[str]]:
        with user_errors():
            result = service.compare_explainers(
                image, backbone, explainers, layer, None, cmap, alpha, progress_fn(progress), faithfulness
            )
            gallery = [(png_file(i.image), i.caption) for i in result.items]
            return gallery, compare_notes(result), gallery_files(result)

    wire_backbone(ctx, backbone, status, [(layer, layer_update(layers, DEFAULT_LAYER))])
    button.click(
        run,
        [image, backbone, methods, layer, cmap, alpha, faithful],
        [gallery, notes, pending],
        api_name="compare_explainers",
        **ctx.model_event,
    ).success(lambda f: f, [pending], [files], api_visibility="private", show_progress="hidden")
