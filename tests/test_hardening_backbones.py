"""Hardening of the backbones layer for a public host (issue 11 items 5 and 12, issue 12's embeddings)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from explainzoo.backbones import (
    Backbone,
    ExplainzooError,
    Preprocessing,
    UnknownNameError,
    WeightsUnavailableError,
    create_backbone,
)
from explainzoo.backbones.weights import load_checkpoint


def _tiny() -> Backbone:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    return Backbone("tiny", model, Preprocessing(input_size=(16, 16)), ["cat", "dog", "tabby, tabby cat"])


# -- item 5: Unicode digits as targets ---------------------------------------------------------


@pytest.mark.parametrize("target", ["²", "①", "٣", "１", "¹²"])
def test_unicode_digits_are_names_not_indices(target):
    bb = _tiny()
    with pytest.raises(UnknownNameError, match="unknown class"):
        bb.class_index(target)


def test_ascii_digits_are_still_indices():
    bb = _tiny()
    assert bb.class_index(" 2 ") == 2 and bb.class_index("tabby") == 2
    with pytest.raises(ExplainzooError, match="out of range"):
        bb.class_index("7")


# -- embedding models: a timm model with num_classes=0 -------------------------------------------


def test_a_timm_model_without_head_is_an_embedding_backbone():
    torch.manual_seed(0)
    bb = create_backbone("timm:resnet18", num_classes=0)
    assert bb.labels == [] and bb.num_classes == 0
    assert bb.kind == "embedding" and bb.is_embedding
    assert bb.layers["last"] == "layer4" and bb.layers["conv1"] == "conv1"
    with torch.no_grad():
        out = bb.scored_output(bb.model(torch.zeros(2, 3, 64, 64)))
    assert out.shape == (2, 512)
    with pytest.raises(ExplainzooError, match="embedding model with no classes"):
        bb.class_index(0)
    with pytest.raises(UnknownNameError):
        bb.class_index("cat")
    assert create_backbone("timm:resnet18", num_classes=3).kind == "classifier"


def test_a_backbone_kind_must_be_known():
    with pytest.raises(ExplainzooError, match="kind must be one of"):
        Backbone("x", nn.Identity(), Preprocessing(), ["a"], kind="detector")


# -- item 12: checkpoint nits --------------------------------------------------------------------


def test_checkpoint_path_through_kwargs_is_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({}, path)
    with pytest.raises(ExplainzooError, match="pass checkpoint=PATH instead") as e:
        create_backbone("timm:resnet18", checkpoint_path=str(path))
    assert "\n" not in str(e.value)


def _state_dict_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "net.pth"
    torch.save(nn.Linear(64, 64).state_dict(), path)
    return path


def test_a_zip_checkpoint_with_corrupted_bytes_is_refused(tmp_path):
    path = _state_dict_file(tmp_path)
    assert set(load_checkpoint(path)) == {"weight", "bias"}
    raw = bytearray(path.read_bytes())
    start = raw.find(b"data/0")  # the weight tensor's record: its bytes follow the local header
    assert start > 0
    pos = start + 200
    raw[pos : pos + 4] = bytes(b ^ 0xFF for b in raw[pos : pos + 4])
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightsUnavailableError, match="is corrupt: .*data/0 fails its CRC check") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_a_directory_and_a_device_are_reported_as_what_they_are(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="is a directory"):
        load_checkpoint(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(WeightsUnavailableError, match="is not a regular file"):
            load_checkpoint("/dev/zero")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(WeightsUnavailableError, match="is a directory"):
        create_backbone("vgg11_ref", checkpoint=tmp_path)


class Evil:
    """Any class that is not a tensor: weights_only refuses to unpickle it."""


def test_a_refused_pickle_is_one_line_with_the_fix(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "extra": Evil()}, path)
    with pytest.raises(WeightsUnavailableError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and "pickled Python objects" in msg and "Evil" in msg
    assert "torch.save(model.state_dict()" in msg


def test_an_unreadable_torch_file_is_one_line(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(WeightsUnavailableError, match="cannot read checkpoint .*not a torch state dict") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
