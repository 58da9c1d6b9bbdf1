"""What every tab shares: the context it is built in, and the widgets built once here.

A tab module exposes ``TITLE`` and ``build(ctx)``; inside ``build`` it lays
out its widgets, defines its handlers and wires its events. Shared pieces
(the one image of the whole app, backbone dropdown, status line, layer list,
colormap and opacity, downloads, error and progress adapters) come from this
module.

One image for the whole app: :func:`shared_image` is built once, above the
tabs, and stored in :attr:`TabContext.image`; every tab's handler takes it as
its first input, so an upload (or an example picked once) reaches every tab.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from explainzoo.backbones import ExplainzooError

from ..display import OUTLIER_PERC
from ..files import example_images, png_file, result_files, uploaded_image
from ..policy import CAPTION_STEPS, COLORMAPS, DEFAULT_LAYER
from ..results import CompareResult, ExplainResult
from ..service import DemoService, ProgressFn

__all__ = [
    "CONCURRENCY_ID",
    "TabContext",
    "backbone_dropdown",
    "backbone_status",
    "downloads",
    "gallery_files",
    "image_input",
    "layer_dropdown",
    "layer_update",
    "progress_fn",
    "render_controls",
    "shared_image",
    "user_errors",
]

#: The one concurrency group of every event that runs a model.
CONCURRENCY_ID = "models"


@dataclass
class TabContext:
    """What a tab is built from: the service and the settings of its events.

    Attributes:
        service: the gradio-free logic.
        concurrency_limit: model-running events at once.
        examples: the example photos offered under the image.
        image: the one image input every tab reads (set by :func:`shared_image`).
        landing: the explanation the page opens with (computed once at start-up).
    """

    service: DemoService
    concurrency_limit: int = 2
    examples: list[str] = field(default_factory=example_images)
    image: gr.Image | None = None
    landing: ExplainResult | None = None

    @property
    def default(self) -> str:
        return self.service.default_backbone

    @property
    def map_explainers(self) -> list[str]:
        return self.service.explainer_names("map")

    @property
    def default_method(self) -> str:
        names = self.map_explainers
        return "gradcam" if "gradcam" in names else names[0]

    @property
    def model_event(self) -> dict[str, Any]:
        """Keyword arguments of an event that runs a model (one shared concurrency group)."""
        return {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": self.concurrency_limit}

    @property
    def helper_event(self) -> dict[str, Any]:
        """Keyword arguments of a private helper event (e.g. refreshing choices)."""
        return {**self.model_event, "api_visibility": "private", "show_progress": "minimal"}

    @property
    def faithfulness_label(self) -> str:
        return (
            f"Deletion AUC in captions ({CAPTION_STEPS} steps: {CAPTION_STEPS + 1} forward passes per "
            "overlay, plus one random map's)"
        )


@contextmanager
def user_errors() -> Iterator[None]:
    """Library errors -> ``gr.Error`` with the library's message (no traceback)."""
    try:
        yield
    except ExplainzooError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def progress_fn(progress: gr.Progress) -> ProgressFn:
    return lambda fraction, message: progress(fraction, desc=message)


def shared_image(ctx: TabContext, elem_id: str = "image") -> gr.Image:
    """The app's one image (upload, webcam, clipboard, or an example), stored in ``ctx.image``.

    It opens on the first example, the one the landing explanation shows.
    """
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            ctx.image = uploaded_image(
                sources=["upload", "webcam", "clipboard"],
                label="Image (every tab uses it)",
                height=240,
                elem_id=elem_id,
                value=ctx.examples[0] if ctx.examples else None,
            )
        with gr.Column(scale=2):
            gr.Markdown(
                "Upload a photo or pick an example **once**: every tab below explains this image. "
                "Each tab's button runs its view on it."
            )
            if ctx.examples:
                gr.Examples([[p] for p in ctx.examples], inputs=[ctx.image], label="Examples")
    return ctx.image


def image_input(ctx: TabContext) -> gr.Image:
    """The image a tab's handler reads: the shared one (built on first use)."""
    return ctx.image if ctx.image is not None else shared_image(ctx)


def downloads(label: str = "Downloads: overlay PNG and raw map (.npy)", **kwargs: Any) -> gr.File:
    """A read-only file list for a result's files (written in the private output folder)."""
    return gr.File(label=label, file_count="multiple", interactive=False, **kwargs)


def backbone_status(service: DemoService, backbone: str) -> str:
    """The status line's text: the service's weights line, a warning sign when on random init."""
    text = service.backbone_status(backbone)
    return f"⚠️ {text}" if service.load(backbone).warning else text


def backbone_dropdown(ctx: TabContext, status: bool = True) -> tuple[gr.Dropdown, gr.Markdown | None]:
    """The backbone dropdown and (``status``) its status line."""
    dropdown = gr.Dropdown(list(ctx.service.backbones), value=ctx.default, label="Backbone")
    line = gr.Markdown(backbone_status(ctx.service, ctx.default)) if status else None
    return dropdown, line


LayerChoices = Callable[[DemoService, str], list[tuple[str, str]]]


def _map_layers(default_label: str | None) -> LayerChoices:
    def choices(service: DemoService, backbone: str) -> list[tuple[str, str]]:
        head = [(default_label, DEFAULT_LAYER)] if default_label else []
        return [*head, *service.layer_choices(backbone)]

    return choices


def layer_update(choices: LayerChoices, value: str) -> Callable[[DemoService, str], Any]:
    """A layer dropdown's update for a new backbone: its choices, back to ``value``."""
    return lambda service, backbone: gr.update(choices=choices(service, backbone), value=value)


def layer_dropdown(
    ctx: TabContext,
    *,
    label: str = "Layer",
    default_label: str | None = "default for the method",
    value: str = DEFAULT_LAYER,
    conv: bool = False,
    **kwargs: Any,
) -> tuple[gr.Dropdown, LayerChoices]:
    """A layer list for the default backbone (aliases first, then every map layer;
    ``conv``: the layers with convolution kernels) and how to rebuild it."""
    choices: LayerChoices = (lambda s, b: s.conv_layer_choices(b)) if conv else _map_layers(default_label)
    dropdown = gr.Dropdown(
        choices(ctx.service, ctx.default), value=value, label=label, allow_custom_value=True, **kwargs
    )
    return dropdown, choices


def wire_backbone(
    ctx: TabContext,
    backbone: gr.Dropdown,
    status: gr.Markdown | None,
    updates: list[tuple[Any, Callable[[DemoService, str], Any]]],
) -> None:
    """On a new backbone: refresh each (widget, update) pair and the status line."""
    outputs = [w for w, _ in updates] + ([status] if status is not None else [])

    def on_backbone(name: str) -> tuple[Any, ...]:
        with user_errors():
            out = [make(ctx.service, name) for _, make in updates]
            if status is not None:
                out.append(backbone_status(ctx.service, name))
            return tuple(out)

    backbone.change(on_backbone, [backbone], outputs, **ctx.helper_event)


def render_controls(cmap: str = "jet", opacity: bool = True) -> tuple[gr.Dropdown, gr.Slider | None]:
    """Colormap (and opacity) controls side by side."""
    with gr.Row():
        colormap = gr.Dropdown(list(COLORMAPS), value=cmap, label="Colormap")
        alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity") if opacity else None
    return colormap, alpha


def gallery_files(result: CompareResult, prefix: str = "") -> list[str]:
    """The downloads of a comparison: each overlay's PNG and its map (``.npy``, in [0, 1])."""
    out: list[str] = []
    for item in result.items:
        name = item.caption.split(" |")[0]
        if item.map is not None:
            out += result_files(item.image, item.map, prefix, name)
        else:
            out.append(png_file(item.image, f"{name}-"))  # type: ignore[arg-type]
    return out


def compare_notes(result: CompareResult) -> str:
    """The captions in full (the gallery truncates them), how to read them, warnings and errors."""
    parts = ["\n".join(f"{i}. {item.caption}" for i, item in enumerate(result.items, 1))]
    if result.items:
        parts.append(
            "Each overlay is its map scaled to [0, 1] over the image (low end of the colormap: no evidence, "
            f"high end: the strongest). Gradient maps are drawn with their top {OUTLIER_PERC:g} % of values "
            f"clipped to the {100 - OUTLIER_PERC:g}th percentile (Captum's `outlier_perc`); CAMs as computed."
        )
    parts += [f"⚠️ {w}" for w in dict.fromkeys(result.warnings)]
    parts += [f"❌ **{name}**: {msg}" for name, msg in result.errors.items()]
    return "\n\n".join(parts)
