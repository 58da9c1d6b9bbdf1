"""``torchvision:<name>``: classification and segmentation models on the builder (issue 12).

Random init only, no network: every build here must not try a download (a
test makes any download attempt fail loudly). Pretrained weights are
exercised through a planted file in a temporary torch hub cache.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from explainzoo.backbones import (
    UnknownNameError,
    WeightsUnavailableError,
    create_backbone,
    family_registry,
    list_backbones,
    load_backbone,
)
from explainzoo.backbones.torchvision_zoo import TorchvisionFamily, cached_file


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tmp_path
    torch.hub.set_dir(old)


def test_the_family_lists_classification_and_segmentation_models():
    models = torchvision.models
    expected = set(models.list_models(module=models)) | set(models.list_models(module=models.segmentation))
    names = list_backbones("torchvision:*")
    assert {n.split(":", 1)[1] for n in names} == expected
    assert list_backbones("torchvision:*mobilenet_v3*") == [
        "torchvision:deeplabv3_mobilenet_v3_large", "torchvision:lraspp_mobilenet_v3_large",
        "torchvision:mobilenet_v3_large", "torchvision:mobilenet_v3_small",
    ]
    assert isinstance(family_registry.load("torchvision"), TorchvisionFamily)


def test_the_cli_lists_the_family():
    out = subprocess.run([sys.executable, "-m", "explainzoo.demo.cli", "list", "backbones", "torchvision:*"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "torchvision:resnet18" in out and "torchvision:fcn_resnet50" in out


def test_resnet18_preprocessing_labels_and_aliases_come_from_torchvision():
    bb = create_backbone("torchvision:resnet18")
    pre = bb.preprocessing
    assert pre.input_size == (224, 224) and pre.crop_pct == pytest.approx(224 / 256)
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406)) and pre.interpolation == "bilinear"
    assert bb.labels[0] == "tench" and len(bb.labels) == 1000 and bb.kind == "classifier"
    assert bb.weights == "random init" and not bb.pretrained
    assert bb.layers == {"conv1": "conv1", "last": "layer4", "stage1": "layer1", "stage2": "layer2",
                         "stage3": "layer3", "stage4": "layer4"}


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "regnet_x_400mf"])
def test_derived_aliases_are_checked_on_the_forward_pass(name):
    torch.manual_seed(0)
    bb = create_backbone(f"torchvision:{name}")
    layers = bb.layers
    assert isinstance(bb.module(layers["conv1"]), nn.Conv2d)
    last = bb.layer_format(layers["last"])
    assert last.spatial and last.stride >= 16
    strides = [bb.layer_format(layers[f"stage{i}"]).stride for i in range(1, 10) if f"stage{i}" in layers]
    assert len(strides) >= 3 and strides == sorted(strides) and len(set(strides)) == len(strides)
    with torch.no_grad():
        assert bb.scored_output(bb.model(bb.preprocess(torch.rand(3, 200, 260)))).shape == (1, 1000)


def test_swin_maps_are_channels_last_and_vit_tokens_have_a_class_token():
    swin = create_backbone("torchvision:swin_t")
    assert swin.layer_hints.nhwc and swin.layer_format(swin.layers["last"]).layout == "nhwc"
    vit = create_backbone("torchvision:vit_b_32")
    fmt = vit.layer_format(vit.layers["last"])
    assert vit.layers["last"] == "encoder.layers.encoder_layer_11.ln_1"
    assert fmt.layout == "tokens" and fmt.prefix_tokens == 1 and fmt.size == (7, 7)


@pytest.mark.parametrize("name, last", [
    ("deeplabv3_mobilenet_v3_large", "backbone.16"),
    ("lraspp_mobilenet_v3_large", "backbone.16"),
    ("fcn_resnet50", "backbone.layer4"),
])
def test_segmentation_models_score_the_dense_out_map(name, last):
    torch.manual_seed(0)
    bb = create_backbone(f"torchvision:{name}", img_size=64)
    assert bb.kind == "segmentation" and bb.output_key == "out"
    assert bb.labels[0] == "__background__" and "dog" in bb.labels and bb.num_classes == 21
    assert bb.layers["last"] == last and bb.layer_format(last).spatial
    assert bb.preprocessing.crop_pct == 1.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        raw = bb.model(x)
    assert set(raw) == {"out"}  # random init: aux_loss=False
    assert bb.scored_output(raw).shape == (2, 21, 64, 64)
    if name == "fcn_resnet50":
        assert [bb.layers[f"stage{i}"] for i in range(1, 5)] == [f"backbone.layer{i}" for i in range(1, 5)]


def test_a_region_score_on_a_segmentation_model_is_explainable():
    from explainzoo.explainers import explain

    torch.manual_seed(0)
    bb = create_backbone("torchvision:lraspp_mobilenet_v3_large", img_size=64)
    dog = bb.class_index("dog")
    exp = explain("gradcam", bb, torch.randn(1, 3, 64, 64), target=lambda out: out[:, dog].mean((1, 2)))
    assert exp.maps.shape == (1, 64, 64) and torch.isfinite(torch.as_tensor(exp.maps)).all()


def test_pretrained_weights_are_read_from_the_torch_hub_cache(hub_dir):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    path = cached_file(weights.url)
    assert path.parent == hub_dir / "checkpoints"
    with pytest.raises(WeightsUnavailableError, match="not in the torch hub cache") as e:
        create_backbone("torchvision:resnet18", pretrained=True)
    assert "torchvision:resnet18" in str(e.value) and "\n" not in str(e.value)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    bb = create_backbone("torchvision:resnet18", pretrained=True)
    assert bb.pretrained and bb.weights == "torchvision (ResNet18_Weights.IMAGENET1K_V1)"
    assert torch.equal(bb.model.conv1.weight, reference.conv1.weight)
    assert not bb.model.training


class Payload:
    """Not a tensor: a weights-only read refuses it."""


def test_a_cached_file_with_pickled_code_is_refused(hub_dir):
    path = cached_file(torchvision.models.ResNet18_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(WeightsUnavailableError, match="cannot read .* as a state dict of tensors"):
        create_backbone("torchvision:resnet18", pretrained=True)


def test_load_backbone_falls_back_to_random_init_offline(hub_dir):
    bb, warning = load_backbone("torchvision:mobilenet_v3_small", seed=0)
    assert not bb.pretrained and "RANDOM INIT" in warning and "torch hub cache" in warning


def test_unknown_names_and_weight_kwargs_are_clear_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'torchvision:resnet18'|did you mean 'resnet18'"):
        create_backbone("torchvision:resnet181")
    with pytest.raises(Exception, match="not weights="):
        create_backbone("torchvision:resnet18", weights="DEFAULT")


def test_hints_are_only_given_for_torchvision_models():
    fam = TorchvisionFamily()
    assert fam.hints_for(nn.Sequential(nn.Conv2d(3, 3, 1))) is None
    assert fam.hints_for(torchvision.models.resnet18()).stage_paths == ("layer1", "layer2", "layer3", "layer4")


def test_num_classes_gives_generic_labels():
    bb = create_backbone("torchvision:mobilenet_v3_small", num_classes=5)
    assert bb.labels == [f"class_{i}" for i in range(5)]
