"""explainers.render: colormaps, overlays, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainzoo.backbones import ExplainzooError
from explainzoo.explainers import Explanation
from explainzoo.explainers.render import colorize, heatmap, overlay, tile_grid


def _exp(maps):
    return Explanation(method="m", backbone="b", maps=maps)


def test_colorize_uses_the_matplotlib_colormap():
    import matplotlib

    vals = torch.tensor([[0.0, 0.5, 1.0]])
    rgb = colorize(vals, "viridis")
    ref = (matplotlib.colormaps["viridis"](np.array([[0.0, 0.5, 1.0]]))[..., :3] * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(rgb, ref)


def test_overlay_blends_and_resizes():
    maps = torch.zeros(1, 8, 8)
    maps[0, :4] = 1.0
    img = np.full((16, 16, 3), 255, np.uint8)
    out = np.asarray(overlay(img, _exp(maps), cmap="gray", alpha=1.0))
    assert out.shape == (8, 8, 3)
    assert out[:4].min() == 255 and out[4:].max() == 0
    only_image = np.asarray(overlay(img, _exp(maps), alpha=0.0))
    assert only_image.min() == 255
    with pytest.raises(ExplainzooError, match="alpha"):
        overlay(img, _exp(maps), alpha=2)
    with pytest.raises(ExplainzooError, match="did you mean"):
        heatmap(_exp(maps), cmap="viridiss")


def test_tile_grid_rgb_and_single_channel():
    rgb = Explanation(method="filters", backbone="b", grid=torch.rand(1, 3, 40, 40))
    img = tile_grid(rgb)
    assert img.size == (280, 280) and img.mode == "RGB"
    gray = Explanation(method="activations", backbone="b", grid=torch.rand(2, 1, 10, 20))
    assert tile_grid(gray, index=1, scale=2).size == (40, 20)
    with pytest.raises(ExplainzooError, match="overlay"):
        tile_grid(_exp(torch.rand(1, 4, 4)))
