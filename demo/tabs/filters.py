"""The Filters tab: the kernels of a convolution layer as a tile grid (no image needed)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..files import png_file
from .common import (
    TabContext,
    backbone_dropdown,
    layer_dropdown,
    layer_update,
    progress_fn,
    user_errors,
    wire_backbone,
)

TITLE = "Filters"


def build(ctx: TabContext) -> None:
    service = ctx.service
    with gr.Row():
        with gr.Column(scale=1):
            backbone, status = backbone_dropdown(ctx)
            layer, layers = layer_dropdown(
                ctx,
                label="Convolution layer",
                value="conv1",
                conv=True,
                info="conv1 is the stem: the filter grid of the notes",
            )
            button = gr.Button("Show filters", variant="primary", elem_id="fi-button")
        with gr.Column(scale=2):
            grid = gr.Image(label="Filters", type="pil", format="png")
            caption = gr.Markdown()

    def run(
        backbone: str,
        layer: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[Any, str]:
        with user_errors():
            result = service.filters(backbone, layer, progress_fn(progress))
        note = f"\n\n⚠️ {result.warning}" if result.warning else ""
        return png_file(result.image), result.caption + note

    wire_backbone(ctx, backbone, status, [(layer, layer_update(layers, "conv1"))])
    button.click(run, [backbone, layer], [grid, caption], api_name="filters", **ctx.model_event)
