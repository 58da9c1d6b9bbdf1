"""The Filters and Activations tabs: tile grids (a :class:`DemoService` part)."""

from __future__ import annotations

import time
from typing import Any

from explainzoo.backbones import ExplainzooError
from explainzoo.backbones.images import load_image
from explainzoo.explainers import create_explainer
from explainzoo.explainers.deadline import acquire
from explainzoo.explainers.render import tile_grid

from . import policy
from .policy import DEFAULT_BACKBONE, DISPLAY_SIDE
from .results import GridResult, ProgressFn, quiet

__all__ = ["GridTabs"]


class GridTabs:
    """The two grid tabs; mixed into :class:`~explainzoo.demo.service.DemoService`."""

    @policy.request_scoped
    def filters(
        self,
        backbone: Any = DEFAULT_BACKBONE,
        layer: Any = "conv1",
        progress: ProgressFn | None = None,
    ) -> GridResult:
        """The Filters tab: the kernels of a conv layer as a tile grid (no image needed)."""
        report = progress or quiet
        name = self._backbone(backbone)
        report(0.1, f"loading {name}")
        lb = self._cache.get(name)
        layer = "conv1" if layer is None or (isinstance(layer, str) and not layer.strip()) else layer
        layer = policy.text(layer, "layer", self.limits)
        path = lb.backbone.resolve_layer(layer)
        if path in lb.too_big:
            raise ExplainzooError(
                f"layer {layer!r} has too many kernels to draw here "
                f"({lb.too_big[path] / 1e6:.1f} MP grid; the cap is "
                f"{self.limits.max_grid_pixels / 1e6:.1f} MP): pick an earlier or thinner layer"
            )
        report(0.5, "drawing the filters")
        with acquire(lb.backbone.lock, lb.backbone.name):
            exp = create_explainer("filters").explain(lb.backbone, None, layer=layer)
        grid = exp.grid[0]  # type: ignore[index]
        tiles = exp.tiles.shape[1] if exp.tiles is not None else 0
        caption = f"{tiles} kernels of {exp.layer} ({name})"
        scale = max(1, -(-DISPLAY_SIDE // int(grid.shape[-1])))  # small grids enlarged to be seen
        return GridResult(tile_grid(exp, scale=scale), caption, exp.layer or layer, lb.warning, grid.numpy())

    @policy.request_scoped
    def activations(
        self,
        image: Any,
        backbone: Any = DEFAULT_BACKBONE,
        layer: Any = "conv1",
        max_channels: Any = 64,
        cmap: Any = "viridis",
        progress: ProgressFn | None = None,
    ) -> GridResult:
        """The Activations tab: a layer's channel maps for the image, strongest first."""
        report = progress or quiet
        name = self._backbone(backbone)
        cmap, _ = self._render_args(cmap, 0.5)
        k = policy.whole_number(max_channels, "max channels", 1, self.limits.max_activation_channels)
        pil = load_image(image, max_pixels=self.limits.max_pixels)
        report(0.1, f"loading {name}")
        lb = self._cache.get(name)
        bb = lb.backbone
        lyr = self._layer(lb, layer, True) or "conv1"
        shown = bb.preprocessing.resize_crop(pil)
        x = bb.preprocessing.normalize(shown)[None].float()
        report(0.5, f"capturing {lyr}")
        t0 = time.perf_counter()
        with acquire(bb.lock, bb.name):
            exp = create_explainer("activations", order="strength", max_channels=k).explain(bb, x, layer=lyr)
        seconds = time.perf_counter() - t0
        grid = exp.grid[0]  # type: ignore[index]
        fmt = bb.probe.formats.get(exp.layer or "")
        total = fmt.channels if fmt is not None else "?"
        shown_k = exp.tiles.shape[1] if exp.tiles is not None else 0
        caption = (
            f"{shown_k} of {total} channels of {exp.layer} ({name}), strongest first, {seconds * 1000:.0f} ms"
        )
        return GridResult(tile_grid(exp, cmap=cmap), caption, exp.layer or lyr, lb.warning, grid.numpy())
