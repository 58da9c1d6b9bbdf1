"""The Gradio app: six tabs wired to :class:`~explainzoo.demo.service.DemoService`.

``build_demo(service)`` only wires widgets to the service; all logic and all
input validation live in ``demo/service.py``. Library errors a person can fix
(:class:`~explainzoo.backbones.ExplainzooError`) become ``gr.Error`` messages.

Safe to host publicly (see :func:`serve`): our own image loader decodes
uploads (Gradio never does), ``max_file_size`` is set, the queue is bounded and
every model-running event shares one concurrency group, uploads older than an
hour are deleted, and there is no ``share=True``, no ``allowed_paths`` and no
flagging. Every endpoint validates its inputs server-side.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import gradio as gr

from explainzoo.backbones import ExplainzooError

from .images import MAX_FILE_BYTES
from .service import (
    AUTO_TARGET,
    CAPTION_STEPS,
    COLORMAPS,
    DEFAULT_EVALUATE_STEPS,
    DEFAULT_LAYER,
    CompareResult,
    DemoService,
    EvaluateResult,
    ExplainResult,
    ProgressFn,
    configure_offline_hub,
)

__all__ = ["CONCURRENCY_ID", "build_demo", "example_images", "launch", "serve", "uploaded_image"]

logger = logging.getLogger(__name__)

#: The one concurrency group of every event that runs a model.
CONCURRENCY_ID = "models"
#: Uploaded and generated files older than this many seconds are deleted (checked as often).
CACHE_TTL_S = 3600
EXAMPLE_NAMES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")


def _undecoded_upload(payload: Any) -> str | bytes | None:
    """The uploaded file's path (or a data URL's bytes), not decoded.

    Gradio has already checked that the path is in its upload folder.
    """
    if payload is None:
        return None
    url = getattr(payload, "url", None)
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url.partition(",")
        if ";base64" not in header:
            raise gr.Error("images sent as data URLs must be base64-encoded")
        if len(data) > MAX_FILE_BYTES * 4 // 3 + 4:
            raise gr.Error(f"the image is larger than {MAX_FILE_BYTES // 2**20} MiB")
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise gr.Error(f"the image data URL is not valid base64 ({exc})") from exc
    path = getattr(payload, "path", None)
    if not path:
        raise gr.Error("no image was received; upload it again")
    return str(path)


def uploaded_image(**kwargs: Any) -> gr.Image:
    """A stock ``gr.Image`` whose handler receives the uploaded file untouched.

    Stock ``gr.Image`` opens every upload with Pillow before our code sees it;
    this one's ``preprocess`` returns the path of the file in Gradio's upload
    folder (or the bytes of a ``data:`` URL), so that
    :func:`~explainzoo.demo.images.load_image` is the only decoder. (An
    instance override rather than a subclass: Gradio writes a ``.pyi`` stub
    next to the module of every Component subclass.)
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = _undecoded_upload  # type: ignore[method-assign]
    return image


def example_images() -> list[str]:
    """Paths of the bundled example photos (package data: ``demo/examples``)."""
    root = resources.files("explainzoo.demo") / "examples"
    out = []
    for name in EXAMPLE_NAMES:
        path = Path(str(root / name))
        if path.is_file():
            out.append(str(path))
    return out


def png_file(image: Any) -> str | None:
    """Write a PIL image once as a PNG named by its content hash; return the path.

    Gradio caches a returned PIL image by writing it in place to a path named by
    its content hash, so two concurrent requests with the same output (common on
    a shared demo) can serve a half-written file (seen: "Too little data for
    declared Content-Length"). A returned *path* goes through Gradio's atomic
    copy (temporary name, then rename) instead, and we write ours the same way.
    Files older than :data:`CACHE_TTL_S` are removed as new ones are written.
    """
    if image is None:
        return None
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    folder = Path(tempfile.gettempdir()) / f"explainzoo-demo-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    if not path.exists():
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".staging-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
        cutoff = time.time() - CACHE_TTL_S
        for old in folder.glob("*.png"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except FileNotFoundError:
                pass  # removed by a concurrent request: nothing left to do
    else:
        os.utime(path)
    return str(path)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Library errors -> ``gr.Error`` with the library's message (no traceback)."""
    try:
        yield
    except ExplainzooError as exc:
        raise gr.Error(str(exc), print_exception=False) from exc


def _progress(progress: gr.Progress) -> ProgressFn:
    return lambda fraction, message: progress(fraction, desc=message)


def _label_dict(result: ExplainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in result.predictions:
        key = p.label if p.label not in out else f"{p.label} (#{p.index})"
        out[key] = p.prob
    return out


def _explain_info(result: ExplainResult) -> str:
    lines = []
    if result.warning:
        lines.append(f"⚠️ **RANDOM INIT**: {result.warning}")
    lines.append(
        f"**Class explained:** {result.target_label} (#{result.target}, logit {result.score:.2f})  \n"
        f"**Layer:** `{result.layer or 'input (this method works on the image)'}`  \n"
        f"**Weights:** {result.weights}  \n"
        f"**Time:** {result.seconds * 1000:.0f} ms ({result.explainer} on {result.backbone})"
    )
    return "\n\n".join(lines)


def _status(service: DemoService, backbone: str) -> str:
    lb = service.load(backbone)
    if lb.warning:
        return f"⚠️ **RANDOM INIT**: {lb.warning}"
    return f"Weights: {lb.backbone.weights}"


def _notes(result: CompareResult) -> str:
    """The captions in full (the gallery truncates them), then warnings and errors."""
    parts = ["\n".join(f"{i}. {item.caption}" for i, item in enumerate(result.items, 1))]
    parts += [f"⚠️ {w}" for w in dict.fromkeys(result.warnings)]
    parts += [f"❌ **{name}**: {msg}" for name, msg in result.errors.items()]
    return "\n\n".join(parts)


def _evaluate_notes(result: EvaluateResult) -> str:
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


def build_demo(service: DemoService, *, concurrency_limit: int = 2) -> gr.Blocks:
    """The six-tab Blocks app wired to ``service`` (does not launch it).

    Args:
        service: the gradio-free logic; its default backbone is loaded here
            (the layer and class choices come from it).
        concurrency_limit: how many model-running events run at once (they all
            share the concurrency group :data:`CONCURRENCY_ID`).
    """
    default = service.default_backbone
    map_explainers = service.explainer_names("map")
    default_method = "gradcam" if "gradcam" in map_explainers else map_explainers[0]
    examples = example_images()
    example_rows = [[p] for p in examples]
    layer_choices = [("default for the method", DEFAULT_LAYER), *service.layer_choices(default)]
    conv_choices = service.conv_layer_choices(default)
    class_choices = service.class_choices(default)
    model_event: dict[str, Any] = {
        "concurrency_id": CONCURRENCY_ID,
        "concurrency_limit": concurrency_limit,
    }
    helper_event: dict[str, Any] = {**model_event, "api_visibility": "private", "show_progress": "minimal"}
    faithfulness_label = (
        f"Deletion AUC in captions ({CAPTION_STEPS} steps: {CAPTION_STEPS + 1} forward passes per overlay, "
        "plus one random map's)"
    )

    def image_input(elem_id: str, label: str = "Image") -> gr.Image:
        return uploaded_image(
            sources=["upload", "webcam", "clipboard"],
            label=label,
            height=300,
            elem_id=elem_id,
        )

    def backbone_dropdown(label: str = "Backbone") -> gr.Dropdown:
        return gr.Dropdown(list(service.backbones), value=default, label=label)

    # -- handlers ---------------------------------------------------------------------

    def on_backbone(backbone: str) -> tuple[Any, Any, str]:
        with _user_errors():
            return (
                gr.update(
                    choices=[("default for the method", DEFAULT_LAYER), *service.layer_choices(backbone)],
                    value=DEFAULT_LAYER,
                ),
                gr.update(choices=service.class_choices(backbone), value=AUTO_TARGET),
                _status(service, backbone),
            )

    def on_explainer(explainer: str) -> str:
        with _user_errors():
            return service.explainer_info(explainer)

    def run_explain(
        image: str | bytes | None,
        backbone: str,
        explainer: str,
        layer: str,
        target: str,
        cmap: str,
        alpha: float,
        options: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[Any, Any, dict[str, float], str, Any]:
        with _user_errors():
            result = service.explain(
                image, backbone, explainer, layer, target, cmap, alpha, options, _progress(progress)
            )
            if result.warning:
                gr.Warning(result.warning)
            choices = service.class_choices(backbone, result.predictions)
        return (
            png_file(result.overlay),
            png_file(result.raw),
            _label_dict(result),
            _explain_info(result),
            gr.update(choices=choices),
        )

    def run_compare_backbones(
        image: str | bytes | None,
        explainer: str,
        backbones: list[str],
        layer: str,
        cmap: str,
        alpha: float,
        faithfulness: bool,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[list[tuple[Any, str]], str]:
        with _user_errors():
            result = service.compare_backbones(
                image, explainer, backbones, layer, cmap, alpha, _progress(progress), faithfulness
            )
        return [(png_file(i.image), i.caption) for i in result.items], _notes(result)

    def on_compare_explainers_backbone(backbone: str) -> tuple[Any, str]:
        with _user_errors():
            return (
                gr.update(
                    choices=[("default for each method", DEFAULT_LAYER), *service.layer_choices(backbone)],
                    value=DEFAULT_LAYER,
                ),
                _status(service, backbone),
            )

    def run_compare_explainers(
        image: str | bytes | None,
        backbone: str,
        explainers: list[str],
        layer: str,
        cmap: str,
        alpha: float,
        faithfulness: bool,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[list[tuple[Any, str]], str]:
        with _user_errors():
            result = service.compare_explainers(
                image, backbone, explainers, layer, None, cmap, alpha, _progress(progress), faithfulness
            )
        return [(png_file(i.image), i.caption) for i in result.items], _notes(result)

    def run_evaluate(
        image: str | bytes | None,
        backbones: list[str],
        explainers: list[str],
        steps: float,
        sanity_steps: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, Any, str]:
        with _user_errors():
            result = service.evaluate(image, backbones, explainers, steps, sanity_steps, _progress(progress))
        table = {"headers": result.headers, "data": result.rows}
        return table, png_file(result.figure), _evaluate_notes(result)

    def on_filters_backbone(backbone: str) -> tuple[Any, str]:
        with _user_errors():
            return gr.update(choices=service.conv_layer_choices(backbone), value="conv1"), _status(
                service, backbone
            )

    def run_filters(
        backbone: str,
        layer: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, str]:
        with _user_errors():
            result = service.filters(backbone, layer, _progress(progress))
        note = f"\n\n⚠️ {result.warning}" if result.warning else ""
        return png_file(result.image), result.caption + note

    def on_activations_backbone(backbone: str) -> tuple[Any, str]:
        with _user_errors():
            return gr.update(choices=service.layer_choices(backbone), value="conv1"), _status(service, backbone)

    def run_activations(
        image: str | bytes | None,
        backbone: str,
        layer: str,
        max_channels: float,
        cmap: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, str]:
        with _user_errors():
            result = service.activations(image, backbone, layer, max_channels, cmap, _progress(progress))
        note = f"\n\n⚠️ {result.warning}" if result.warning else ""
        return png_file(result.image), result.caption + note

    # -- layout -------------------------------------------------------------------------

    with gr.Blocks(title="explainzoo", analytics_enabled=False, delete_cache=(CACHE_TTL_S, CACHE_TTL_S)) as demo:
        gr.Markdown(
            "# explainzoo\nSee what an image classifier sees: saliency and class activation maps, "
            "filters and activations, on any backbone of the zoo. Example photos: scikit-image "
            "sample data (CC0 / public domain)."
        )
        broken = service.broken_plugins()
        if broken:
            gr.Markdown(
                "Some explainer plugins failed to load and are hidden: "
                + "; ".join(f"`{k}` ({v})" for k, v in broken.items())
            )

        with gr.Tab("Explain"), gr.Row():
            with gr.Column(scale=1):
                ex_image = image_input("ex-image")
                if example_rows:
                    gr.Examples(example_rows, inputs=[ex_image], label="Examples")
                ex_backbone = backbone_dropdown()
                ex_status = gr.Markdown(_status(service, default))
                ex_method = gr.Dropdown(map_explainers, value=default_method, label="Explainer")
                ex_method_info = gr.Markdown(service.explainer_info(default_method))
                ex_layer = gr.Dropdown(
                    layer_choices,
                    value=DEFAULT_LAYER,
                    label="Layer",
                    info="aliases first, then every layer whose output is a map",
                    allow_custom_value=True,
                )
                ex_target = gr.Dropdown(
                    class_choices,
                    value=AUTO_TARGET,
                    label="Target class",
                    info="the top-5 predictions after a run, or type any class name or index (e.g. espresso, 967)",
                    allow_custom_value=True,
                )
                ex_button = gr.Button("Explain", variant="primary", elem_id="explain-button")
                with gr.Accordion("Colormap, opacity and explainer options", open=False):
                    with gr.Row():
                        ex_cmap = gr.Dropdown(list(COLORMAPS), value="jet", label="Colormap")
                        ex_alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                    ex_options = gr.Textbox(
                        label="Explainer options",
                        placeholder="key=value, key=value (e.g. steps=32 for integrated_gradients)",
                        max_length=300,
                    )
            with gr.Column(scale=2):
                with gr.Row():
                    ex_overlay = gr.Image(label="Overlay", type="pil", format="png", elem_id="explain-overlay")
                    ex_raw = gr.Image(label="Raw map (layer resolution)", type="pil", format="png")
                ex_top5 = gr.Label(label="Top-5 predictions", num_top_classes=5)
                ex_info = gr.Markdown(elem_id="explain-info")

        with gr.Tab("Compare backbones"), gr.Row():
            with gr.Column(scale=1):
                cb_image = image_input("cb-image")
                if example_rows:
                    gr.Examples(example_rows, inputs=[cb_image], label="Examples")
                cb_method = gr.Dropdown(map_explainers, value=default_method, label="Explainer")
                cb_backbones = gr.CheckboxGroup(
                    list(service.backbones),
                    value=[b for b in service.backbones if "efficientnet_lite" in b][:3] or [default],
                    label=f"Backbones (at most {service.limits.max_compare_backbones})",
                )
                cb_layer = gr.Dropdown(
                    [
                        ("default for the method", DEFAULT_LAYER),
                        *[(a, a) for a in ("last", "conv1", "stage1", "stage2", "stage3", "stage4")],
                    ],
                    value=DEFAULT_LAYER,
                    label="Layer alias (every backbone answers these)",
                )
                with gr.Row():
                    cb_cmap = gr.Dropdown(list(COLORMAPS), value="jet", label="Colormap")
                    cb_alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                cb_faithful = gr.Checkbox(value=True, label=faithfulness_label)
                cb_button = gr.Button("Compare backbones", variant="primary")
            with gr.Column(scale=2):
                cb_gallery = gr.Gallery(
                    label="Overlays", columns=4, height="auto", type="pil", format="png", elem_id="compare-gallery"
                )
                cb_notes = gr.Markdown()

        with gr.Tab("Compare explainers"), gr.Row():
            with gr.Column(scale=1):
                ce_image = image_input("ce-image")
                if example_rows:
                    gr.Examples(example_rows, inputs=[ce_image], label="Examples")
                ce_backbone = backbone_dropdown()
                ce_status = gr.Markdown(_status(service, default))
                ce_methods = gr.CheckboxGroup(
                    map_explainers,
                    value=service.default_compare_explainers(),
                    label=f"Explainers (at most {service.limits.max_compare_explainers})",
                )
                ce_layer = gr.Dropdown(
                    [("default for each method", DEFAULT_LAYER), *service.layer_choices(default)],
                    value=DEFAULT_LAYER,
                    label="Layer (for layer-based methods)",
                    allow_custom_value=True,
                )
                with gr.Row():
                    ce_cmap = gr.Dropdown(list(COLORMAPS), value="jet", label="Colormap")
                    ce_alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity")
                ce_faithful = gr.Checkbox(value=True, label=faithfulness_label)
                ce_button = gr.Button("Compare explainers", variant="primary")
            with gr.Column(scale=2):
                ce_gallery = gr.Gallery(label="Side by side", columns=3, height="auto", type="pil", format="png")
                ce_notes = gr.Markdown()

        with gr.Tab("Evaluate"), gr.Row():
            with gr.Column(scale=1):
                ev_image = image_input("ev-image")
                if example_rows:
                    gr.Examples(example_rows, inputs=[ev_image], label="Examples")
                ev_backbones = gr.CheckboxGroup(
                    list(service.backbones),
                    value=[default],
                    label=f"Backbones (at most {service.limits.max_compare_backbones})",
                )
                ev_methods = gr.CheckboxGroup(
                    map_explainers,
                    value=[m for m in ("gradcam", "saliency") if m in map_explainers] or [default_method],
                    label=f"Explainers (at most {service.limits.max_evaluate_pairs} backbone x explainer pairs)",
                )
                ev_steps = gr.Slider(
                    1,
                    service.limits.max_evaluate_steps,
                    value=min(DEFAULT_EVALUATE_STEPS, service.limits.max_evaluate_steps),
                    step=1,
                    label="Deletion / insertion steps",
                    info="each pair costs 2 x (steps + 1) forward passes",
                )
                ev_sanity = gr.Slider(
                    0,
                    service.limits.max_sanity_steps,
                    value=0,
                    step=1,
                    label="Sanity-check steps (cascading randomisation; 0: off)",
                    info="each costs one explainer run per pair",
                )
                ev_button = gr.Button("Evaluate", variant="primary")
            with gr.Column(scale=2):
                ev_table = gr.Dataframe(label="Faithfulness", interactive=False, wrap=True)
                ev_curves = gr.Image(label="Deletion and insertion curves", type="pil", format="png")
                ev_notes = gr.Markdown()

        with gr.Tab("Filters"), gr.Row():
            with gr.Column(scale=1):
                fi_backbone = backbone_dropdown()
                fi_status = gr.Markdown(_status(service, default))
                fi_layer = gr.Dropdown(
                    conv_choices,
                    value="conv1",
                    label="Convolution layer",
                    info="conv1 is the stem: the filter grid of the notes",
                    allow_custom_value=True,
                )
                fi_button = gr.Button("Show filters", variant="primary")
            with gr.Column(scale=2):
                fi_image = gr.Image(label="Filters", type="pil", format="png")
                fi_caption = gr.Markdown()

        with gr.Tab("Activations"), gr.Row():
            with gr.Column(scale=1):
                ac_image = image_input("ac-image")
                if example_rows:
                    gr.Examples(example_rows, inputs=[ac_image], label="Examples")
                ac_backbone = backbone_dropdown()
                ac_status = gr.Markdown(_status(service, default))
                ac_layer = gr.Dropdown(
                    service.layer_choices(default),
                    value="conv1",
                    label="Layer",
                    allow_custom_value=True,
                )
                ac_channels = gr.Slider(
                    1,
                    service.limits.max_activation_channels,
                    value=64,
                    step=1,
                    label="Channels shown (strongest first)",
                )
                ac_cmap = gr.Dropdown(list(COLORMAPS), value="viridis", label="Colormap")
                ac_button = gr.Button("Show activations", variant="primary")
            with gr.Column(scale=2):
                ac_grid = gr.Image(label="Channel maps", type="pil", format="png")
                ac_caption = gr.Markdown()

        # -- events ---------------------------------------------------------------------
        ex_backbone.change(on_backbone, [ex_backbone], [ex_layer, ex_target, ex_status], **helper_event)
        ex_method.change(on_explainer, [ex_method], [ex_method_info], api_visibility="private")
        ex_button.click(
            run_explain,
            [ex_image, ex_backbone, ex_method, ex_layer, ex_target, ex_cmap, ex_alpha, ex_options],
            [ex_overlay, ex_raw, ex_top5, ex_info, ex_target],
            api_name="explain",
            **model_event,
        )
        cb_button.click(
            run_compare_backbones,
            [cb_image, cb_method, cb_backbones, cb_layer, cb_cmap, cb_alpha, cb_faithful],
            [cb_gallery, cb_notes],
            api_name="compare_backbones",
            **model_event,
        )
        ce_backbone.change(on_compare_explainers_backbone, [ce_backbone], [ce_layer, ce_status], **helper_event)
        ce_button.click(
            run_compare_explainers,
            [ce_image, ce_backbone, ce_methods, ce_layer, ce_cmap, ce_alpha, ce_faithful],
            [ce_gallery, ce_notes],
            api_name="compare_explainers",
            **model_event,
        )
        ev_button.click(
            run_evaluate,
            [ev_image, ev_backbones, ev_methods, ev_steps, ev_sanity],
            [ev_table, ev_curves, ev_notes],
            api_name="evaluate",
            **model_event,
        )
        fi_backbone.change(on_filters_backbone, [fi_backbone], [fi_layer, fi_status], **helper_event)
        fi_button.click(
            run_filters, [fi_backbone, fi_layer], [fi_image, fi_caption], api_name="filters", **model_event
        )
        ac_backbone.change(on_activations_backbone, [ac_backbone], [ac_layer, ac_status], **helper_event)
        ac_button.click(
            run_activations,
            [ac_image, ac_backbone, ac_layer, ac_channels, ac_cmap],
            [ac_grid, ac_caption],
            api_name="activations",
            **model_event,
        )
    return demo


def serve(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    queue_size: int = 64,
    concurrency_limit: int = 2,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> gr.Blocks:
    """Queue and launch ``demo`` with the public-hosting settings.

    Bounded queue (``queue_size`` waiting requests), ``max_file_size`` equal to
    the image loader's cap, no share link, no ``allowed_paths``, no MCP
    server, no server-side rendering, errors other than ``gr.Error`` not
    shown to the client.
    """
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency_limit)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=MAX_FILE_BYTES,
        show_error=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
        inbrowser=False,
        footer_links=["api"],
    )
    return demo


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    backbones: str | Sequence[str] | None = None,
    *,
    cache_size: int = 8,
    queue_size: int = 64,
    concurrency_limit: int = 2,
    prevent_thread_lock: bool = False,
    on_ready: Callable[[float], None] | None = None,
) -> gr.Blocks:
    """Build the service and the app, then serve it (what ``explainzoo demo`` runs).

    Args:
        host, port: where to listen (default http://127.0.0.1:7860).
        backbones: comma-separated names (or a list) to offer; None offers
            :data:`~explainzoo.backbones.CURATED`.
        cache_size: backbones kept loaded.
        queue_size: requests that may wait in the queue.
        concurrency_limit: model-running events at once.
        prevent_thread_lock: return once serving (tests) instead of blocking.
        on_ready: called with the seconds from this call to a served page.
    """
    t0 = time.perf_counter()
    configure_offline_hub()
    service = DemoService(backbones, cache_size=cache_size)
    demo = build_demo(service, concurrency_limit=concurrency_limit)
    try:
        serve(
            demo,
            host,
            port,
            queue_size=queue_size,
            concurrency_limit=concurrency_limit,
            prevent_thread_lock=True,
        )
    except OSError as exc:
        raise ExplainzooError(f"cannot serve the demo on {host}:{port} ({exc}); pick another --port") from exc
    elapsed = time.perf_counter() - t0
    logger.info("explainzoo demo ready on http://%s:%d in %.1f s", host, port, elapsed)
    if on_ready is not None:
        on_ready(elapsed)
    if not prevent_thread_lock:
        demo.block_thread()
    return demo
