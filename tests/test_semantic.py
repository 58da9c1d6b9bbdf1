"""Semantic checks on a real photo with the offline-pretrained EfficientNet-Lite0."""

from __future__ import annotations

import dataclasses

import torch

from explainzoo.explainers import explain

# skimage's chelsea is 451x300; the cat fills x < 370 (measured by eye once);
# the right edge beyond x = 390 is background.
CAT_BOX = (20, 0, 370, 300)  # x0, y0, x1, y1 in the original image
BACKGROUND_X0 = 390


def test_chelsea_is_a_cat_and_gradcam_peaks_on_it(lite0, chelsea):
    h, w = chelsea.shape[:2]
    # the whole photo (no centre crop, so the background stays in view), 224 x 336
    pre = dataclasses.replace(lite0.preprocessing, input_size=(224, 336), crop_pct=1.0)
    x = pre(chelsea)
    exp = explain("gradcam", lite0, x)
    label = lite0.labels[int(exp.targets[0])]
    assert 281 <= int(exp.targets[0]) <= 285, label  # the cat classes of ImageNet
    m = exp.maps[0]
    iy, ix = divmod(int(m.argmax()), m.shape[1])
    oy, ox = iy * h / m.shape[0], ix * w / m.shape[1]
    x0, y0, x1, y1 = CAT_BOX
    assert x0 <= ox <= x1 and y0 <= oy <= y1, (ox, oy)
    bg = m[:, int(BACKGROUND_X0 * m.shape[1] / w) :]
    cat = m[:, int(x0 * m.shape[1] / w) : int(x1 * m.shape[1] / w)]
    assert float(cat.mean()) > 2 * float(bg.mean())


def test_gradcam_follows_the_target_class(lite0, coffee):
    x = lite0.preprocess(coffee)
    top = explain("gradcam", lite0, x)
    assert "espresso" in lite0.labels[int(top.targets[0])] or "cup" in lite0.labels[int(top.targets[0])]
    other = explain("gradcam", lite0, x, target="tabby")
    assert int(other.targets[0]) == 281
    assert not torch.allclose(top.maps, other.maps, atol=1e-2)
