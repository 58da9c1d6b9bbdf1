"""backbones.preprocess: any image -> the tensor the model expects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explainzoo.backbones import ExplainzooError, Preprocessing
from explainzoo.backbones.preprocess import image_to_tensor


def test_shape_dtype_and_normalisation():
    pre = Preprocessing(input_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = np.full((300, 451, 3), 255, np.uint8)
    x = pre(white)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.ones_like(x))
    torch.testing.assert_close(pre.unnormalize(x[0]), torch.ones(3, 224, 224))


def test_centre_crop_keeps_the_centre():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 90:110] = 255  # a vertical bar in the middle
    pre = Preprocessing(input_size=(32, 32), mean=(0, 0, 0), std=(1, 1, 1), crop_pct=1.0)
    x = pre(img)[0, 0]
    assert x[:, 14:18].mean() > 0.9 and x[:, :5].mean() < 0.05


@pytest.mark.parametrize(
    "image",
    [
        np.full((20, 30), 128, np.uint8),
        np.full((20, 30, 4), 128, np.uint8),
        np.full((20, 30, 3), 32896, np.uint16),
        np.full((20, 30, 3), 0.5019608, np.float32),
        Image.new("P", (30, 20), 0),
    ],
)
def test_image_types(image):
    t = image_to_tensor(image)
    assert t.shape == (3, 20, 30) and t.dtype == torch.float32
    assert 0 <= float(t.min()) <= float(t.max()) <= 1


def test_alpha_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    torch.testing.assert_close(image_to_tensor(rgba), torch.ones(3, 4, 4))


def test_bad_images_are_clear_errors():
    with pytest.raises(ExplainzooError, match="too small"):
        Preprocessing()(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ExplainzooError, match="shape"):
        image_to_tensor(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ExplainzooError, match="dtype"):
        image_to_tensor(np.zeros((4, 4, 3), np.int64))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_8_bit_images_are_resized_as_timms_pil_transform_does(interpolation):
    from skimage import data

    photo = Image.fromarray(data.chelsea())  # 451x300 -> short side 256 -> 384x256, centre 224
    pre = Preprocessing(input_size=(224, 224), mean=(0, 0, 0), std=(1, 1, 1), interpolation=interpolation)
    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    ref = np.asarray(photo.resize((385, 256), resample)).astype(np.float32) / 255  # round(451*256/300)=385
    top, left = (256 - 224) // 2, (385 - 224) // 2
    ref_t = torch.from_numpy(ref[top : top + 224, left : left + 224].copy()).permute(2, 0, 1)
    for image in (photo, np.asarray(photo)):
        x = pre.resize_crop(image)
        diff = (x - ref_t).abs()
        assert float(diff.max()) <= 1.5 / 255 and float(diff.mean()) < 1e-4  # PIL's rounding only
    # a float image takes the float path: the same picture within a float resize's difference
    x_float = pre.resize_crop(image_to_tensor(photo))
    assert float((x_float - ref_t).abs().mean()) < 3e-3
