"""Maps people can read: percentile clipping of gradient maps, colour bars, downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from explainzoo.backbones import ExplainzooError
from explainzoo.demo.display import check_outlier_perc, outlier_perc_for, reading_note, with_colorbar
from explainzoo.explainers import CAMExplainer, explainer_class
from explainzoo.explainers.render import clip_percentile, colorbar, colorize

CHELSEA = str(Path(__file__).resolve().parents[1] / "demo" / "examples" / "chelsea.jpg")


def test_clip_percentile_clips_the_top_values_then_scales():
    x = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    out = clip_percentile(x, 2.0)
    thr = torch.quantile(x.flatten(), 0.98)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.max()) == 1.0 and float(out.min()) == 0.0
    assert torch.all(out[x >= thr] == 1.0) and torch.all(out[x < thr] < 1.0)
    assert torch.allclose(clip_percentile(x, 0), x / 99)  # 0: min-max only
    # per image, and a map that is mostly zeros is scaled by its maximum, not blanked out
    sparse = torch.zeros(2, 10, 10)
    sparse[0, 0, 0] = 5.0
    sparse[1] = x[0]
    out = clip_percentile(sparse, 2.0)
    assert float(out[0, 0, 0]) == 1.0 and float(out[0].sum()) == 1.0
    assert torch.allclose(out[1], clip_percentile(x, 2.0)[0])
    nan = x.clone()
    nan[0, 0, 0] = float("nan")
    assert torch.isfinite(clip_percentile(nan, 2.0)).all()
    assert float(clip_percentile(torch.zeros(4, 4), 2.0).abs().sum()) == 0.0
    with pytest.raises(ExplainzooError, match="outlier_perc"):
        clip_percentile(x, 100)


def test_which_maps_are_clipped_follows_the_family():
    for name in ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "guided_gradcam"):
        assert outlier_perc_for(explainer_class(name)) == 2.0, name
    for name in ("gradcam", "gradcam_pp", "layercam", "scorecam", "eigencam", "filters"):
        assert outlier_perc_for(explainer_class(name)) == 0.0, name
    optout = type("Smooth", (explainer_class("saliency"),), {"outlier_perc": 0})
    assert outlier_perc_for(optout) == 0.0
    wants = type("Sharp", (CAMExplainer,), {"outlier_perc": 1})
    assert outlier_perc_for(wants, 5.0) == 5.0
    assert check_outlier_perc("2.5") == 2.5
    for bad in (-1, 21, "lots", True):
        with pytest.raises(ExplainzooError, match="outlier clipping"):
            check_outlier_perc(bad)


def test_colour_bar_runs_from_the_low_to_the_high_end():
    bar = np.asarray(colorbar("viridis", 300, "0", "1", "value"))
    assert bar.shape[1] == 300 and bar.shape[0] > 20
    ends = colorize(np.array([[0.0, 1.0]]), "viridis")[0]
    assert np.abs(bar[6, 0].astype(int) - ends[0]).max() <= 3
    assert np.abs(bar[6, -1].astype(int) - ends[1]).max() <= 3
    from PIL import Image

    raw = Image.new("RGB", (224, 224), (10, 20, 30))
    out = with_colorbar(raw, "jet", np.linspace(0, 3, 49).reshape(7, 7), 2.0)
    assert out.size[0] == 448 and out.size[1] > 448
    assert "Clipped" in reading_note("jet", 0.5, 2.0, True) and "Clipped" not in reading_note("jet", 0.5, 0, False)


@pytest.fixture(scope="module")
def service():
    from explainzoo.demo.service import DemoService

    return DemoService(["timm:tf_efficientnet_lite0"])


def test_a_clipped_saliency_overlay_is_readable(service):
    clipped = service.explain(CHELSEA, explainer="saliency")
    plain = service.explain(CHELSEA, explainer="saliency", outlier_perc=0)
    assert clipped.outlier_perc == 2.0 and plain.outlier_perc == 0.0
    np.testing.assert_array_equal(clipped.map, plain.map)  # the drawing changes, not the map

    def hot(img) -> float:  # jet's low end is dark blue: red, yellow and green pixels carry the map
        a = np.asarray(img).astype(float)
        return float(((a[..., 0] > 150) | (a[..., 1] > 150)).mean())

    assert hot(clipped.overlay) > hot(plain.overlay) + 0.05, (hot(plain.overlay), hot(clipped.overlay))
    assert np.asarray(clipped.raw).mean() > np.asarray(plain.raw).mean() + 5
    cam = service.explain(CHELSEA, explainer="gradcam")
    assert cam.outlier_perc == 0.0 and cam.raw_map.shape == (7, 7)


def test_downloads_hold_the_overlay_and_the_raw_map(service):
    from PIL import Image

    from explainzoo.demo.files import result_files

    r = service.explain(CHELSEA, explainer="gradcam")
    png, npy = result_files(r.overlay, r.raw_map, r.explainer, r.backbone, r.target)
    assert png.endswith(".png") and npy.endswith(".npy") and Path(png).parent == Path(npy).parent
    assert Path(png).name.startswith("gradcam-tf_efficientnet_lite0-")
    assert Image.open(png).size == (224, 224)
    np.testing.assert_array_equal(np.load(npy, allow_pickle=False), r.raw_map.astype(np.float32))
    assert result_files(r.overlay, r.raw_map, r.explainer, r.backbone, r.target) == [png, npy]  # written once
