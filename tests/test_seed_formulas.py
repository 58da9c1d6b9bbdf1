"""The four explainers of the notes equal the notes' formulas, computed here independently.

Each reference below follows the study notes line by line (hooks appending to
lists, ``.backward()``, ``nn.Upsample``), on a copy of the model whose ReLUs are
not in place, so the notes' own in-place corruption does not leak in.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainzoo.backbones import create_backbone
from explainzoo.explainers import explain

SEED_LAYERS = ["backbone.conv1", "backbone.bn4_1", "backbone.bn5_2"]


class _NotInplace(nn.Module):
    """The notes' VGG11 forward with out-of-place ReLU."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)

    def forward(self, x):
        b = self.model.backbone
        for conv, bn, pool in [
            ("conv1", "bn1", "pool1"), ("conv2", "bn2", "pool2"), ("conv3_1", "bn3_1", None),
            ("conv3_2", "bn3_2", "pool3"), ("conv4_1", "bn4_1", None), ("conv4_2", "bn4_2", "pool4"),
            ("conv5_1", "bn5_1", None), ("conv5_2", "bn5_2", None),
        ]:
            x = F.relu(getattr(b, bn)(getattr(b, conv)(x)))
            if pool:
                x = getattr(b, pool)(x)
        return self.model.fc_out(self.model.gap(x).flatten(1))


def plot_filters_data(data: torch.Tensor) -> np.ndarray:
    """The notes' plot_filters up to imshow, returning the tiled array."""
    if data.size(1) > 3:
        data = data.view(-1, 1, data.size(2), data.size(3))
    data = data.detach().permute(0, 2, 3, 1).numpy()
    data = (data - data.min()) / (data.max() - data.min())
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = ((0, n**2 - data.shape[0]), (0, 2), (0, 2)) + ((0, 0),) * (data.ndim - 3)
    data = np.pad(data, padding, mode="constant", constant_values=1)
    data = data.reshape((n, n) + data.shape[1:]).transpose((0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    data = data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])
    return data.squeeze()


@pytest.fixture(scope="module")
def trained_vgg():
    """A fresh vgg11_ref with non-trivial BN statistics (a random init has mean 0, var 1)."""
    torch.manual_seed(0)
    vgg = create_backbone("vgg11_ref")
    g = torch.Generator().manual_seed(3)
    for m in vgg.model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2)
    return vgg


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(7)
    return torch.randn(1, 3, 96, 96, generator=g)


def test_filters_equals_notes(trained_vgg):
    exp = explain("filters", trained_vgg, layer="conv1")
    ref = plot_filters_data(trained_vgg.model.backbone.conv1.weight)  # (40,40,3)
    got = exp.grid[0].permute(1, 2, 0).numpy()
    assert got.shape == ref.shape == (40, 40, 3)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # a layer with more than 3 input channels becomes single-channel tiles
    exp2 = explain("filters", trained_vgg, layer="backbone.conv2")
    ref2 = plot_filters_data(trained_vgg.model.backbone.conv2.weight)
    np.testing.assert_allclose(exp2.grid[0, 0].numpy(), ref2, atol=1e-5)


@pytest.mark.parametrize("layer", ["backbone.conv1", "backbone.bn4_1"])
def test_activations_equal_notes_hook(trained_vgg, image, layer):
    model = _NotInplace(trained_vgg.model).eval()
    activation_list = []

    def show_activations_hook(name, module, input, output):
        if output.dim() == 4:
            activation_list.append(output)

    import functools

    module = model.model.get_submodule(layer)
    h = module.register_forward_hook(functools.partial(show_activations_hook, layer))
    with torch.no_grad():
        model(image)
    h.remove()
    ref = plot_filters_data(activation_list[0])
    exp = explain("activations", trained_vgg, image, layer=layer)
    np.testing.assert_allclose(exp.grid[0, 0].numpy(), ref, atol=1e-5)


def test_saliency_equals_notes(trained_vgg, image):
    model = _NotInplace(trained_vgg.model).eval()
    inp = image.clone().requires_grad_(True)
    output = model(inp)[0]
    _, max_idx = torch.max(output, 0)
    s_y = output[max_idx]
    s_y.backward()
    vis, _ = torch.max(inp.grad[0] ** 2, 0)
    exp = explain("saliency", trained_vgg, image)
    assert int(exp.targets[0]) == int(max_idx)
    torch.testing.assert_close(exp.maps[0], vis / vis.max(), atol=1e-5, rtol=0)
    torch.testing.assert_close(exp.raw[0], vis, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", SEED_LAYERS)
def test_gradcam_equals_notes(trained_vgg, image, layer):
    model = _NotInplace(trained_vgg.model).eval()
    save_feat, save_grad = [], []
    module = model.model.get_submodule(layer)
    h = module.register_forward_hook(lambda m, i, o: save_feat.append(o))
    s = model(image)[0]
    h.remove()
    save_feat[0].register_hook(lambda g: save_grad.append(g))
    y = torch.argmax(s).item()
    s[y].backward()
    alpha = nn.AdaptiveAvgPool2d(1)(save_grad[0][0])
    A = save_feat[0][0]
    grad_cam = nn.ReLU()(torch.sum(alpha * A, dim=0))[None, None]
    up = nn.Upsample(scale_factor=image.shape[-1] / grad_cam.shape[-1], mode="bilinear")
    grad_cam = up(grad_cam)
    grad_cam = (grad_cam / torch.max(grad_cam))[0, 0].detach()
    exp = explain("gradcam", trained_vgg, image, layer=layer)
    assert exp.layer == layer and int(exp.targets[0]) == y
    assert (exp.maps[0] - grad_cam).abs().max() <= 1e-5
