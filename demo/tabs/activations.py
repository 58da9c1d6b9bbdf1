"""The Activations tab: a layer's channel maps for the image, strongest first."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..files import png_file
from .common import (
    TabContext,
    backbone_dropdown,
    image_input,
    layer_dropdown,
    layer_update,
    progress_fn,
    render_controls,
    user_errors,
    wire_backbone,
)

TITLE = "Activations"


def build(ctx: TabContext) -> None:
    service = ctx.service
    image = image_input(ctx)
    with gr.Row():
        with gr.Column(scale=1):
            backbone, status = backbone_dropdown(ctx)
            layer, layers = layer_dropdown(ctx, default_label=None, value="conv1")
            channels = gr.Slider(
                1,
                service.limits.max_activation_channels,
                value=64,
                step=1,
                label="Channels shown (strongest first)",
            )
            cmap, _ = render_controls("viridis", opacity=False)
            button = gr.Button("Show activations", variant="primary", elem_id="ac-button")
        with gr.Column(scale=2):
            grid = gr.Image(label="Channel maps", type="pil", format="png", elem_id="ac-grid")
            caption = gr.Markdown(elem_id="ac-caption")

    def run(
        image: str | bytes | None,
        backbone: str,
        layer: str,
        max_channels: float,
        cmap: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[Any, str]:
        with user_errors():
            result = service.activations(image, backbone, layer, max_channels, cmap, progress_fn(progress))
        note = f"\n\n⚠️ {result.warning}" if result.warning else ""
        return png_file(result.image), result.caption + note

    wire_backbone(ctx, backbone, status, [(layer, layer_update(layers, "conv1"))])
    button.click(
        run, [image, backbone, layer, channels, cmap], [grid, caption], api_name="activations", **ctx.model_event
    )
