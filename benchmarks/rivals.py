"""Adapters: one explanation of a benchmark cell by ours and by each library.

Every implementation is wrapped as an :class:`Impl` whose ``call()`` runs one
explanation of the cell's batch and returns maps (N,H,W) at the input
resolution (any scale: agreement min-max normalises). Objects are built once,
outside the timed loop, for ours and theirs alike; ``close()`` removes what
they registered (hooks) when the cell is done.

The rivals run on a deep copy of the model (same weights), one library at a
time, so their hooks (pytorch-grad-cam and torchcam keep forward hooks for the
life of the extractor) never fire inside our calls and never count as ours.

A method is benchmarked against a library only when both have it: ours are
whatever ``list_explainers()`` returns now (so new explainers are picked up
automatically), theirs are the table :data:`RIVALS` below, filtered by the
libraries that import.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score/Ablation-CAM print progress bars

LIBRARIES = ("pytorch-grad-cam", "captum", "torchcam")
_MODULES = {"pytorch-grad-cam": "pytorch_grad_cam", "captum": "captum", "torchcam": "torchcam"}
_DISTS = {"pytorch-grad-cam": "grad-cam", "captum": "captum", "torchcam": "torchcam"}

#: Methods whose speed target is stated against the plain forward pass.
GRADIENT_CAMS = ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam")


def available_libraries() -> dict[str, str]:
    """Library -> version, for the rivals that import here."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for lib, mod in _MODULES.items():
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a broken install is just "not available"
            continue
        try:
            out[lib] = version(_DISTS[lib])
        except PackageNotFoundError:
            out[lib] = "?"
    return out


@dataclass
class Cell:
    """What every implementation of one (backbone, batch, method) needs."""

    backbone: Any  # explainzoo Backbone (ours run on backbone.model)
    rival_model: nn.Module  # a deep copy of backbone.model for the libraries
    x: Tensor  # (N,3,H,W) on the device
    targets: Tensor  # (N,) long, the classes every implementation explains
    layer: str  # resolved module path of the "last" alias
    ours_config: dict[str, Any] = field(default_factory=dict)

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    @property
    def module(self) -> nn.Module:
        """The target layer inside the rivals' copy."""
        return self.rival_model.get_submodule(self.layer)

    @property
    def layout(self) -> str:
        return self.backbone.layer_format(self.layer).layout

    def reshape_transform(self) -> Callable[[Tensor], Tensor] | None:
        """tokens / NHWC -> (N,C,h,w) for the libraries (None for NCHW layers).

        Written here rather than borrowed from our backbone: it is what a user
        of those libraries writes (pytorch-grad-cam's ViT tutorial: drop the
        class token, reshape to the patch grid, channels first).
        """
        fmt = self.backbone.layer_format(self.layer)
        if fmt.layout == "nchw":
            return None
        if fmt.layout == "nhwc":
            return lambda t: t.permute(0, 3, 1, 2)
        prefix = fmt.prefix_tokens
        h = round(self.input_hw[0] / fmt.stride)
        w = round(self.input_hw[1] / fmt.stride)

        def tokens_to_map(t: Tensor) -> Tensor:
            t = t[:, prefix:, :]
            return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

        return tokens_to_map


@dataclass
class Impl:
    """One implementation of a method, ready to call."""

    library: str  # "ours" or a library name
    api: str  # the class used, e.g. "GradCAM"
    call: Callable[[], Tensor]
    close: Callable[[], None] = lambda: None
    note: str = ""


class NotApplicable(Exception):
    """This library cannot run this method on this cell (the reason is the message)."""


def upsample(maps: Tensor, hw: tuple[int, int]) -> Tensor:
    """(N,h,w) or (N,1,h,w) -> (N,H,W) bilinear, as ours and most overlays do."""
    if maps.ndim == 3:
        maps = maps[:, None]
    if tuple(maps.shape[-2:]) != tuple(hw):
        maps = F.interpolate(maps.float(), size=hw, mode="bilinear", align_corners=False)
    return maps[:, 0]


def opt(config: dict[str, Any], names: tuple[str, ...], default: Any) -> Any:
    """The first of ``names`` that our explainer's config has, else ``default``."""
    for n in names:
        if n in config and config[n] is not None:
            return config[n]
    return default


# -- channel reductions: rivals return (N,3,H,W); ours (N,H,W) ---------------
# Each rival's input attribution goes through the reduction our explainer
# documents (with its current options), so agreement compares one quantity.

def reduction_for(method: str, config: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    """How ``method`` (with our ``config``) turns (N,3,H,W) attributions into (N,H,W)."""
    if method == "saliency":  # the notes: squared gradient, max over colour channels
        return lambda a: a.pow(2).amax(dim=1)
    if method == "smoothgrad":  # |mean gradient| (or its square), max over channels
        if config.get("square"):
            return lambda a: a.pow(2).amax(dim=1)
        return lambda a: a.abs().amax(dim=1)
    if method == "integrated_gradients":  # channel-summed attribution, then abs/positive/signed
        sign = config.get("sign", "abs")
        if sign == "positive":
            return lambda a: a.sum(dim=1).clamp(min=0)
        if sign == "signed":
            return lambda a: a.sum(dim=1)
        return lambda a: a.sum(dim=1).abs()
    if method == "occlusion":  # the same value on all channels of a window
        return lambda a: a[:, 0]
    return lambda a: a.abs().amax(dim=1)  # guided backprop and anything else


def fill_for(cell: Cell, kind: Any) -> Tensor:
    """Our ``baseline`` option ("mean" / "black") as a tensor shaped like the input."""
    try:
        from explainzoo.explainers.mechanics import fill_value
    except ImportError:  # before the shared mechanics module
        from explainzoo.explainers.perturb import fill_value

    return fill_value(cell.backbone, str(kind), cell.x).expand_as(cell.x).contiguous()


# -- pytorch-grad-cam --------------------------------------------------------

def _pgc_targets(cell: Cell) -> list:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return [ClassifierOutputTarget(int(t)) for t in cell.targets.tolist()]


def pgc_cam(cls_name: str, **kwargs: Any) -> Callable[[Cell], Impl]:
    def make(cell: Cell) -> Impl:
        import pytorch_grad_cam as pgc

        cls = getattr(pgc, cls_name)
        extra = dict(kwargs)
        if cls_name == "AblationCAM" and cell.layout == "tokens":
            from pytorch_grad_cam.ablation_layer import AblationLayerVit

            extra["ablation_layer"] = AblationLayerVit()
        cam = cls(model=cell.rival_model, target_layers=[cell.module],
                  reshape_transform=cell.reshape_transform(), **extra)
        targets = _pgc_targets(cell)
        x = cell.x.clone()

        def call() -> Tensor:
            return torch.from_numpy(cam(input_tensor=x, targets=targets))

        def close() -> None:
            cam.activations_and_grads.release()

        return Impl("pytorch-grad-cam", cls_name, call, close)

    return make


def pgc_guided_backprop(cell: Cell) -> Impl:
    from pytorch_grad_cam import GuidedBackpropReLUModel

    gb = GuidedBackpropReLUModel(model=cell.rival_model, device=cell.x.device)
    reduce = reduction_for("guided_backprop", cell.ours_config)
    targets = cell.targets.tolist()

    def call() -> Tensor:
        # It explains image 0 of a batch only (output[0, category]): one call per image.
        outs = []
        for i, t in enumerate(targets):
            g = gb(cell.x[i : i + 1].clone(), target_category=t)  # (H,W,3) numpy
            outs.append(torch.from_numpy(g).permute(2, 0, 1))
        return reduce(torch.stack(outs))

    return Impl("pytorch-grad-cam", "GuidedBackpropReLUModel", call,
                note="one call per image (it explains image 0 of a batch only)")


# -- Captum ------------------------------------------------------------------

def captum_layer_gradcam(cell: Cell) -> Impl:
    if cell.layout != "nchw":
        raise NotApplicable("LayerGradCam has no reshape_transform for token/NHWC layers")
    from captum.attr import LayerGradCam

    lgc = LayerGradCam(cell.rival_model, cell.module)
    hw = cell.input_hw

    def call() -> Tensor:
        a = lgc.attribute(cell.x, target=cell.targets, relu_attributions=True)
        return upsample(a, hw)

    return Impl("captum", "LayerGradCam", call)


def captum_saliency(cell: Cell) -> Impl:
    from captum.attr import Saliency

    sal = Saliency(cell.rival_model)
    reduce = reduction_for("saliency", cell.ours_config)

    def call() -> Tensor:
        return reduce(sal.attribute(cell.x, target=cell.targets, abs=False))

    return Impl("captum", "Saliency", call)


def smoothgrad_settings(cell: Cell) -> dict[str, Any]:
    """Samples, noise std and samples per pass matching our smoothgrad options."""
    cfg = cell.ours_config
    samples = int(opt(cfg, ("samples", "n_samples", "num_samples"), 16))
    rel = float(opt(cfg, ("noise", "noise_level"), 0.15))
    # ours: sigma = noise * (max - min) of each image; Captum takes one std for the batch
    spans = (cell.x.flatten(1).amax(dim=1) - cell.x.flatten(1).amin(dim=1)).tolist()
    std = rel * sum(spans) / len(spans)
    chunk = int(opt(cfg, ("batch_size",), 16))
    return {"samples": samples, "std": std, "batch": chunk}


def captum_smoothgrad(cell: Cell) -> Impl:
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(cell.rival_model))
    s = smoothgrad_settings(cell)
    n = cell.x.shape[0]
    # Captum puts N * nt_samples_batch_size noisy inputs in one pass; ours puts
    # batch_size samples of one image: same inputs per pass.
    per = max(1, min(s["samples"], s["batch"] // n))
    reduce = reduction_for("smoothgrad", cell.ours_config)

    def call() -> Tensor:
        a = nt.attribute(cell.x, nt_type="smoothgrad", nt_samples=s["samples"],
                         nt_samples_batch_size=per, stdevs=s["std"], target=cell.targets, abs=False)
        return reduce(a)

    return Impl("captum", "NoiseTunnel(Saliency)", call,
                note=f"{s['samples']} samples, std {s['std']:.3g}, {per * n} inputs per pass")


_CAPTUM_RULES = {"midpoint": "riemann_middle", "trapezoid": "riemann_trapezoid", "right": "riemann_right"}


def ig_settings(cell: Cell) -> dict[str, Any]:
    cfg = cell.ours_config
    steps = int(opt(cfg, ("steps", "n_steps"), 16))
    rule = str(opt(cfg, ("rule",), "trapezoid"))
    chunk = int(opt(cfg, ("batch_size",), 16))
    # our default "adaptive" applies the trapezoid rule to its nodes: Captum's nearest is riemann_trapezoid
    return {"steps": steps, "method": _CAPTUM_RULES.get(rule, "riemann_trapezoid"), "batch": chunk}


def captum_integrated_gradients(cell: Cell) -> Impl:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(cell.rival_model)
    s = ig_settings(cell)
    reduce = reduction_for("integrated_gradients", cell.ours_config)
    baseline = fill_for(cell, cell.ours_config.get("baseline", "black"))

    def call() -> Tensor:
        a = ig.attribute(cell.x, baselines=baseline, target=cell.targets, n_steps=s["steps"],
                         method=s["method"], internal_batch_size=s["batch"])
        return reduce(a)

    return Impl("captum", "IntegratedGradients", call,
                note=f"{s['steps']} steps, {s['method']}, {s['batch']} inputs per pass")


def captum_guided_backprop(cell: Cell) -> Impl:
    from captum.attr import GuidedBackprop

    gbp = GuidedBackprop(cell.rival_model)
    reduce = reduction_for("guided_backprop", cell.ours_config)

    def call() -> Tensor:
        return reduce(gbp.attribute(cell.x, target=cell.targets))

    return Impl("captum", "GuidedBackprop", call)


def window_settings(cfg: dict[str, Any], hw: tuple[int, int]) -> tuple[int, int]:
    """(window, stride) of our sliding window for an input of size ``hw`` (0: automatic)."""
    window = int(cfg.get("window") or max(1, round(2 * min(hw) / 7)))
    stride = int(cfg.get("stride") or max(1, window // 2))
    return window, stride


def occlusion_settings(cell: Cell) -> dict[str, Any]:
    """Window, stride, fill and score of our occlusion (its defaults resolved)."""
    cfg = cell.ours_config
    window, stride = window_settings(cfg, cell.input_hw)
    return {"window": window, "stride": stride, "batch": int(cfg.get("batch_size", 16)),
            "baseline": cfg.get("baseline", "mean"), "score": cfg.get("score", "probability")}


def captum_occlusion(cell: Cell) -> Impl:
    from captum.attr import Occlusion

    s = occlusion_settings(cell)
    h, w = cell.input_hw
    if (h - s["window"]) % s["stride"] or (w - s["window"]) % s["stride"]:
        raise NotApplicable("Captum's windows do not reach the border with this stride; ours moves "
                            "the last window to touch it")
    model = cell.rival_model
    if s["score"] == "probability":  # a Captum forward_func may be any callable
        def forward(inp: Tensor) -> Tensor:
            return model(inp).softmax(dim=1)
    else:
        forward = model
    occ = Occlusion(forward)
    reduce = reduction_for("occlusion", cell.ours_config)
    baseline = fill_for(cell, s["baseline"])

    def call() -> Tensor:  # Captum runs the perturbed passes under no_grad itself
        a = occ.attribute(cell.x, sliding_window_shapes=(3, s["window"], s["window"]),
                          strides=(3, s["stride"], s["stride"]), baselines=baseline,
                          target=cell.targets, perturbations_per_eval=s["batch"])
        return reduce(a)

    return Impl("captum", "Occlusion", call,
                note=f"window {s['window']}, stride {s['stride']}, {s['batch']} per pass, "
                     f"score {s['score']}")


# -- torchcam ----------------------------------------------------------------

def torchcam_cam(cls_name: str, needs_grad: bool = True) -> Callable[[Cell], Impl]:
    def make(cell: Cell) -> Impl:
        from torchcam import methods

        cls = getattr(methods, cls_name)
        extractor = cls(cell.rival_model, target_layer=cell.layer,
                        input_shape=tuple(cell.x.shape[1:]),
                        reshape_transform=cell.reshape_transform())
        model = cell.rival_model
        idx = [int(t) for t in cell.targets.tolist()]
        hw = cell.input_hw

        def call() -> Tensor:
            if needs_grad:
                with torch.enable_grad():
                    scores = model(cell.x)
                    cams = extractor(class_idx=idx, scores=scores)
            else:  # as torchcam documents Score-CAM: forward under inference_mode
                with torch.inference_mode():
                    scores = model(cell.x)
                cams = extractor(class_idx=idx)
            return upsample(cams[0], hw)

        def close() -> None:
            extractor.remove_hooks()
            extractor.reset_hooks()

        return Impl("torchcam", cls_name, call, close)

    return make


#: method -> library -> adapter factory. Only methods ours has registered run.
RIVALS: dict[str, dict[str, Callable[[Cell], Impl]]] = {
    "gradcam": {
        "pytorch-grad-cam": pgc_cam("GradCAM"),
        "captum": captum_layer_gradcam,
        "torchcam": torchcam_cam("GradCAM"),
    },
    "gradcam_pp": {
        "pytorch-grad-cam": pgc_cam("GradCAMPlusPlus"),
        "torchcam": torchcam_cam("GradCAMpp"),
    },
    "xgradcam": {
        "pytorch-grad-cam": pgc_cam("XGradCAM"),
        "torchcam": torchcam_cam("XGradCAM"),
    },
    "layercam": {
        "pytorch-grad-cam": pgc_cam("LayerCAM"),
        "torchcam": torchcam_cam("LayerCAM"),
    },
    "hirescam": {"pytorch-grad-cam": pgc_cam("HiResCAM")},
    "scorecam": {
        "pytorch-grad-cam": pgc_cam("ScoreCAM"),
        "torchcam": torchcam_cam("ScoreCAM", needs_grad=False),
    },
    "ablationcam": {"pytorch-grad-cam": pgc_cam("AblationCAM")},
    "eigencam": {"pytorch-grad-cam": pgc_cam("EigenCAM")},
    "saliency": {"captum": captum_saliency},
    "smoothgrad": {"captum": captum_smoothgrad},
    "integrated_gradients": {"captum": captum_integrated_gradients},
    "guided_backprop": {
        "pytorch-grad-cam": pgc_guided_backprop,
        "captum": captum_guided_backprop,
    },
    "occlusion": {"captum": captum_occlusion},
}


def rival_impls(method: str, cell: Cell, libraries: dict[str, str]) -> tuple[list[Impl], dict[str, str]]:
    """The libraries' implementations of ``method`` for ``cell``.

    Returns (impls, skipped) where skipped maps library -> why it did not run.
    """
    impls: list[Impl] = []
    skipped: dict[str, str] = {}
    for lib, make in RIVALS.get(method, {}).items():
        if lib not in libraries:
            skipped[lib] = "not installed"
            continue
        try:
            impls.append(make(cell))
        except NotApplicable as exc:
            skipped[lib] = str(exc)
    return impls, skipped


#: Methods whose ideal cost is S forward+backward passes, batched (the S*F+B reference):
#: method -> (its settings for a cell, the key of S in them).
SAMPLED: dict[str, tuple[Callable[[Cell], dict[str, Any]], str]] = {
    "smoothgrad": (smoothgrad_settings, "samples"),
    "integrated_gradients": (ig_settings, "steps"),
}


def sampled_reference(method: str, cell: Cell) -> tuple[int, int] | None:
    """(passes S, inputs per pass) of ``method``'s S*F+B reference; None: it has none."""
    if method not in SAMPLED:
        return None
    settings, key = SAMPLED[method]
    s = settings(cell)
    return int(s[key]), int(s["batch"])


def rival_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (same weights, device and mode) for the libraries."""
    return copy.deepcopy(model).eval()
