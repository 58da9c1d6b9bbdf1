"""Our extra configurations per method, and where ours differs from a library by design.

A variant is one more row of a cell (ours with other options, timed in the
same rounds); a known difference is shown in the report but not held to the
agreement target.
"""

from __future__ import annotations

from typing import Any

from .rivals import GRADIENT_CAMS

#: Extra configurations of ours timed in the same cell as the defaults (one row each).
OURS_VARIANTS: dict[str, list[dict[str, Any]]] = {
    # the default weights the channels as the paper does (p_c(X * H_k)); this row weights every
    # channel as the libraries do (a softmax over channels of the logit): the same method as theirs
    "scorecam": [{"max_channels": 0, "weights": "channel_softmax"}],
    # pytorch-grad-cam centres the features before the SVD; ours does not by default
    "eigencam": [{"center": True}],
    # the default rule is adaptive (no library has it); trapezoid is Captum's riemann_trapezoid
    # (whose weights sum to (n-1)/n: a scale, removed by the normalisation)
    "integrated_gradients": [{"rule": "trapezoid"}],
}


def known_difference(method: str, variant: dict[str, Any], library: str, backbone: str) -> str | None:
    """Why ours and ``library`` compute different maps by design here (None: same method).

    Agreement figures of these pairs are shown but not held to r >= 0.99.
    """
    if method == "smoothgrad":
        return "random noise: compared with the library's own run-to-run agreement"
    if method == "scorecam" and variant.get("weights") != "channel_softmax":
        return ("channel weights: ours p_c(X * H_k) (the paper, the authors' code), the libraries "
                "a softmax over channels of the logits (the weights=channel_softmax row is theirs)")
    if method == "scorecam" and library == "pytorch-grad-cam":
        return ("pytorch-grad-cam upsamples the masks with nn.UpsamplingBilinear2d (align_corners=True); "
                "ours and torchcam use align_corners=False, as for the map itself")
    if method == "eigencam" and not variant.get("center"):
        return "pytorch-grad-cam centres the features before the SVD (see the center=True row)"
    if method == "eigencam":
        return "the SVD's sign: pytorch-grad-cam keeps numpy's arbitrary sign, ours orients it"
    if method == "integrated_gradients" and variant.get("rule", "adaptive") == "adaptive":
        return ("ours places the path nodes adaptively; Captum's riemann_trapezoid spaces them evenly "
                "(the rule=trapezoid row)")
    if method == "gradcam_pp" and library == "torchcam":
        return ("torchcam 0.5 never divides alpha: `alpha[idx][mask].div_(...)` divides a copy "
                "made by the boolean index")
    if method == "gradcam_pp" and backbone.startswith("timm:vit"):
        return ("signed LayerNorm tokens: alpha = g^2 / (2 g^2 + sum(A) g^3) has negative "
                "denominators, which ours sets to alpha = 0; pytorch-grad-cam's eps = 1e-6 in that "
                "denominator dominates at ViT's gradient scale (~1e-4)")
    if backbone == "vgg11_ref" and method in (*GRADIENT_CAMS, "scorecam", "ablationcam", "eigencam"):
        return ("vgg11_ref applies F.relu(inplace=True) to the layer's output: the libraries' "
                "hooks see it rectified, ours keeps the layer's own output (DESIGN.md)")
    if method == "guided_backprop" and backbone not in ("timm:resnet50", "timm:test_resnet"):
        return ("the libraries guide nn.ReLU modules only; ours also guides ReLU6/GELU and "
                "functional relu (EfficientNet-Lite0, ViT, vgg11_ref)")
    if method == "ablationcam" and backbone.startswith("timm:vit"):
        return "pytorch-grad-cam ablates a token channel to min - 1e7, ours to zero"
    return None


def variant_label(options: dict[str, Any]) -> str:
    """``k=v,k=v``: how a variant is named in the report."""
    return ",".join(f"{k}={v}" for k, v in options.items())
