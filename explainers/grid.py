"""Grid methods of the notes: first-layer filters and activation maps."""

from __future__ import annotations

from torch import Tensor

from explainzoo.backbones import ExplainzooError

from .base import Context, GridExplainer, Option


class Filters(GridExplainer):
    """The convolution kernels of a layer as an image grid (the notes' plot).

    Weights (O,I,kh,kw): with I == 3 each filter is an RGB tile; otherwise every
    (output, input) kernel is its own single-channel tile (O*I tiles). All tiles
    are min-max normalised together and laid out n x n with 2-pixel borders of 1.
    Reads weights only: ``x`` may be None.
    """

    description = "convolution kernels of a layer (default conv1) as a tile grid"
    paper = "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, 2014 (arXiv:1311.2901)"
    default_layer = "conv1"
    needs_input = False

    def tiles(self, ctx: Context) -> Tensor:
        module = ctx.backbone.module(ctx.layer or "")
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor) or weight.ndim != 4:
            raise ExplainzooError(
                f"layer {ctx.layer!r} is not a convolution layer (no 4-D weight); pick a Conv2d such as 'conv1'"
            )
        w = weight.detach().float().cpu()
        if w.shape[1] != 3:
            w = w.reshape(-1, 1, w.shape[2], w.shape[3])
        n = 1 if ctx.x is None else ctx.x.shape[0]
        return w[None].expand(n, *w.shape)


class Activations(GridExplainer):
    """The channels of a layer's output for each image, as a tile grid.

    A forward hook captures the layer's output (the forward stops there); each
    channel is a single-channel tile, normalised together per image.
    ``order="strength"`` puts the channels with the highest mean activation
    first; ``max_channels`` keeps the first K after ordering.
    """

    description = "a layer's channel maps for each image as a tile grid"
    paper = "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, 2014 (arXiv:1311.2901)"
    default_layer = "conv1"
    options = {
        "order": Option("index", "channel order: 'index' or 'strength' (mean activation, high first)",
                        choices=("index", "strength")),
        "max_channels": Option(0, "keep at most this many channels after ordering (0: all)", low=0, high=4096),
    }

    def tiles(self, ctx: Context) -> Tensor:
        acts, _ = ctx.activations(stop=True)
        acts = acts.float()
        if self.config["order"] == "strength":
            order = acts.mean(dim=(2, 3)).argsort(dim=1, descending=True)
            acts = acts.gather(1, order[:, :, None, None].expand_as(acts))
        k = self.config["max_channels"]
        if k:
            acts = acts[:, :k]
        return acts[:, :, None]
