"""The Explain tab: one image, one backbone, one explainer; overlay, raw map, top-5 and downloads.

The page opens on this tab with the landing explanation (``ctx.landing``,
computed once when the app is built) already in its outputs.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..display import MAX_OUTLIER_PERC, OUTLIER_PERC, reading_note, with_colorbar
from ..files import png_file, result_files
from ..policy import AUTO_TARGET
from ..results import SCORES, ExplainResult
from .common import (
    TabContext,
    backbone_dropdown,
    downloads,
    image_input,
    layer_dropdown,
    layer_update,
    progress_fn,
    render_controls,
    user_errors,
    wire_backbone,
)

TITLE = "Explain"


def _label_dict(result: ExplainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in result.predictions:
        key = p.label if p.label not in out else f"{p.label} (#{p.index})"
        out[key] = p.prob
    return out


def _score_line(result: ExplainResult) -> str:
    """"Class explained: tiger cat (#282, logit 9.35)", or the score when it is no plain class logit."""
    desc = result.target_description
    if not desc or desc.endswith("(logit)") or desc == result.target_label:
        return f"**Class explained:** {result.target_label} (#{result.target}, logit {result.score:.2f})  \n"
    return f"**Score explained:** {desc} = {result.score:.3f}  \n"


def _info(result: ExplainResult, cmap: str, alpha: float) -> str:
    lines = []
    if result.warning:
        lines.append(f"⚠️ **RANDOM INIT**: {result.warning}")
    lines.append(
        _score_line(result)
        + f"**Layer:** `{result.layer or 'input (this method works on the image)'}`  \n"
        f"**Weights:** {result.weights}  \n"
        f"**Time:** {result.seconds * 1000:.0f} ms ({result.explainer} on {result.backbone})"
    )
    lines.append(reading_note(cmap, alpha, result.outlier_perc, result.layer is None))
    return "\n\n".join(lines)


def shown(result: ExplainResult, cmap: str = "jet", alpha: float = 0.5) -> dict[str, Any]:
    """What the tab's outputs show for ``result``: file paths, labels, text (by output name)."""
    raw_map = result.raw_map if result.raw_map is not None else result.map
    return {
        "overlay": png_file(result.overlay, f"{result.explainer}-overlay-"),
        "raw": png_file(with_colorbar(result.raw, cmap, raw_map, result.outlier_perc)),
        "top5": _label_dict(result),
        "info": _info(result, cmap, alpha),
        "files": result_files(result.overlay, raw_map, result.explainer, result.backbone, result.target),
    }


#: The "contrast with" choice meaning: no contrast.
NO_CONTRAST = "none"


def _score_controls(service: Any, ctx: TabContext, preds: Any) -> tuple[Any, Any]:
    """"Contrast with" (a second class: why the target rather than it) and "Score" (logit or probability)."""
    contrast = gr.Dropdown(
        [NO_CONTRAST, *service.class_choices(ctx.default, preds)[1:]],
        value=NO_CONTRAST,
        label="Contrast with",
        info="why the target rather than this class (the map of the score difference)",
        allow_custom_value=True,
        elem_id="explain-contrast",
    )
    score = gr.Radio(list(SCORES), value="logit", label="Score", elem_id="explain-score",
                     info="the class logit, or its softmax probability")
    return contrast, score


def _more_controls() -> tuple[Any, ...]:
    """Colormap, opacity, outlier clipping and explainer options, in a closed accordion."""
    with gr.Accordion("Colormap, opacity, clipping, options", open=False, elem_id="explain-more"):
        cmap, alpha = render_controls()
        clip = gr.Slider(
            0,
            MAX_OUTLIER_PERC,
            value=OUTLIER_PERC,
            step=0.5,
            label="Clip the top % of gradient maps (outlier_perc)",
            info="gradient maps only (saliency, SmoothGrad, IG, guided): 0 draws them unclipped",
            elem_id="explain-clip",
        )
        options = gr.Textbox(
            "",
            label="Explainer options",
            placeholder="key=value, key=value (e.g. steps=32 for integrated_gradients)",
            max_length=300,
        )
    return cmap, alpha, clip, options


def _outputs(first: dict[str, Any]) -> tuple[Any, ...]:
    """Overlay, raw map with colour bar, top-5, notes and downloads; ``first``: their initial values."""
    with gr.Column(scale=2):
        with gr.Row():
            overlay = gr.Image(
                first.get("overlay"), label="Overlay", type="pil", format="png", elem_id="explain-overlay"
            )
            raw = gr.Image(
                first.get("raw"),
                label="Raw map (layer resolution) and its colour bar",
                type="pil",
                format="png",
                elem_id="explain-raw",
            )
        top5 = gr.Label(first.get("top5"), label="Top-5 predictions", num_top_classes=5)
        info = gr.Markdown(first.get("info", ""), elem_id="explain-info")
        files = downloads(value=first.get("files"), elem_id="explain-files")
    return overlay, raw, top5, info, files


def build(ctx: TabContext) -> None:
    service = ctx.service
    image = image_input(ctx)
    first = shown(ctx.landing) if ctx.landing is not None else {}
    with gr.Row():
        with gr.Column(scale=1):
            backbone, status = backbone_dropdown(ctx)
            method = gr.Dropdown(
                ctx.map_explainers, value=ctx.default_method, label="Explainer", elem_id="explain-method"
            )
            method_info = gr.Markdown(service.explainer_info(ctx.default_method))
            layer, layers = layer_dropdown(ctx, info="aliases first, then every layer whose output is a map")
            preds = ctx.landing.predictions if ctx.landing is not None else ()
            target = gr.Dropdown(
                service.class_choices(ctx.default, preds),
                value=AUTO_TARGET,
                label="Target class",
                info="the top-5 predictions after a run, or type any class name or index (e.g. espresso, 967)",
                allow_custom_value=True,
            )
            contrast, score = _score_controls(service, ctx, preds)
            button = gr.Button("Explain", variant="primary", elem_id="explain-button")
            cmap, alpha, clip, options = _more_controls()
        overlay, raw, top5, info, files = _outputs(first)
    pending = gr.State()

    def on_explainer(explainer: str) -> str:
        with user_errors():
            return service.explainer_info(explainer)

    def run(
        image: str | bytes | None,
        backbone: str,
        explainer: str,
        layer: str,
        target: str,
        cmap: str,
        alpha: float,
        options: str,
        outlier_perc: float = OUTLIER_PERC,
        contrast: str = NO_CONTRAST,
        score: str = "logit",
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[Any, ...]:
        with user_errors():
            result = service.explain(
                image,
                backbone,
                explainer,
                layer,
                target,
                cmap,
                alpha,
                options,
                progress_fn(progress),
                outlier_perc=outlier_perc,
                contrast=contrast,
                score=score,
            )
            if result.warning:
                gr.Warning(result.warning)
            choices = service.class_choices(backbone, result.predictions)
            out = shown(result, cmap, alpha)
        # the downloads and the contrast choices follow in a private step: the API's outputs stay five
        later = (out["files"], [NO_CONTRAST, *choices[1:]])
        return out["overlay"], out["raw"], out["top5"], out["info"], gr.update(choices=choices), later

    targets = lambda s, b: gr.update(choices=s.class_choices(b), value=AUTO_TARGET)  # noqa: E731
    contrasts = lambda s, b: gr.update(choices=[NO_CONTRAST, *s.class_choices(b)[1:]], value=NO_CONTRAST)  # noqa: E731
    wire_backbone(ctx, backbone, status, [(layer, layer_update(layers, "default")), (target, targets),
                                          (contrast, contrasts)])
    method.change(on_explainer, [method], [method_info], api_visibility="private")
    button.click(
        run,
        [image, backbone, method, layer, target, cmap, alpha, options, clip, contrast, score],
        [overlay, raw, top5, info, target, pending],
        api_name="explain",
        **ctx.model_event,
    ).success(lambda p: (p[0], gr.update(choices=p[1])), [pending], [files, contrast], api_visibility="private",
              show_progress="hidden")
