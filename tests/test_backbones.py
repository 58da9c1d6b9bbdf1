"""backbones: the zoo, aliases checked against real tensors, weights, labels."""

from __future__ import annotations

import pytest
import torch

from explainzoo.backbones import (
    CURATED,
    ExplainzooError,
    UnknownNameError,
    WeightsUnavailableError,
    create_backbone,
    list_backbones,
)
from explainzoo.backbones.vgg11_ref import VGG11Classifier, from_vgg11_bn

from .conftest import get_backbone


def test_list_backbones_has_reference_and_curated():
    names = list_backbones()
    assert names[0] == "vgg11_ref"
    assert set(CURATED) <= set(names)
    assert list_backbones("timm:tf_*lite0*") == ["timm:tf_efficientnet_lite0"]
    assert "timm:resnet18" in list_backbones("timm:resnet1*")
    assert list_backbones("vgg*") == ["vgg11_ref"]


def test_unknown_backbone_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'vgg11_ref'"):
        create_backbone("vgg11_rf")
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        create_backbone("timm:resnet181")
    with pytest.raises(UnknownNameError, match="backbone family"):
        create_backbone("nope:resnet18")


def test_vgg11_ref_has_the_notes_module_names(vgg):
    names = [n for n, _ in vgg.model.named_modules() if n]
    expected = ["backbone"]
    for conv, bn, pool in [
        ("conv1", "bn1", "pool1"), ("conv2", "bn2", "pool2"), ("conv3_1", "bn3_1", None),
        ("conv3_2", "bn3_2", "pool3"), ("conv4_1", "bn4_1", None), ("conv4_2", "bn4_2", "pool4"),
        ("conv5_1", "bn5_1", None), ("conv5_2", "bn5_2", None),
    ]:
        expected += [f"backbone.{conv}", f"backbone.{bn}"] + ([f"backbone.{pool}"] if pool else [])
    assert names == expected + ["gap", "fc_out"]
    assert vgg.probe.formats["backbone.bn5_2"].channels == 512
    assert vgg.probe.formats["backbone.bn5_2"].size == (14, 14)
    out = vgg.model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)


def test_vgg11_ref_num_classes_and_labels():
    bb = create_backbone("vgg11_ref", num_classes=10)
    assert bb.num_classes == 10 and bb.labels[3] == "class_3"
    assert bb.model.fc_out.out_features == 10


def test_vgg11_bn_weights_map_onto_reference(tmp_path):
    import timm

    torch.manual_seed(1)
    src = timm.create_model("vgg11_bn", pretrained=False).eval()
    for m in src.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ref = VGG11Classifier().eval()
    ref.load_state_dict(from_vgg11_bn(src.state_dict()), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = src.features[:28](x)  # up to the ReLU after bn5_2, before the 5th pool
        got = ref.backbone(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the same mapping through a checkpoint file
    path = tmp_path / "vgg11_bn.pth"
    torch.save(src.state_dict(), path)
    bb = create_backbone("vgg11_ref", checkpoint=path)
    assert "head random init" in bb.weights
    with torch.no_grad():
        torch.testing.assert_close(bb.model.backbone(x), expected, rtol=1e-5, atol=1e-5)


def test_checkpoint_roundtrip_safetensors_and_torch(tmp_path):
    from safetensors.torch import save_file

    a = create_backbone("vgg11_ref", num_classes=5)
    sd = {k: v.contiguous() for k, v in a.model.state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "m.pt")
    x = torch.randn(1, 3, 32, 32)
    for f in ("m.safetensors", "m.pt"):
        b = create_backbone("vgg11_ref", num_classes=5, checkpoint=tmp_path / f)
        assert b.pretrained and b.weights == f"checkpoint {tmp_path / f}"
        with torch.no_grad():
            torch.testing.assert_close(b.model(x), a.model(x))


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_backbone("vgg11_ref", checkpoint=tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read checkpoint"):
        create_backbone("vgg11_ref", checkpoint=bad)
    torch.save({"fc_out.weight": torch.zeros(3, 512)}, tmp_path / "partial.pt")
    with pytest.raises(WeightsUnavailableError, match="missing"):
        create_backbone("vgg11_ref", checkpoint=tmp_path / "partial.pt")


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsUnavailableError):
        create_backbone("vgg11_ref", checkpoint=path)


def test_pretrained_without_source_is_an_error_not_random_init():
    with pytest.raises(WeightsUnavailableError, match="no published weights"):
        create_backbone("vgg11_ref", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights reachable"):
        create_backbone("timm:resnet18", pretrained=True)  # HF_HUB_OFFLINE=1, empty cache


def test_offline_weights_classify_real_photos(lite0, chelsea, coffee):
    assert lite0.pretrained and "offline package" in lite0.weights
    with torch.no_grad():
        cat = lite0.model(lite0.preprocess(chelsea)).argmax(1).item()
        cup = lite0.model(lite0.preprocess(coffee)).argmax(1).item()
    assert 281 <= cat <= 285, lite0.labels[cat]  # tabby, tiger, Persian, Siamese, Egyptian cat
    assert "espresso" in lite0.labels[cup] or "cup" in lite0.labels[cup], lite0.labels[cup]


@pytest.mark.parametrize("name", ["timm:tf_efficientnet_lite1", "timm:tf_efficientnet_lite2"])
def test_other_offline_packages_load(name, chelsea):
    bb = create_backbone(name, pretrained=True)
    with torch.no_grad():
        assert 281 <= bb.model(bb.preprocess(chelsea)).argmax(1).item() <= 285


def test_labels_imagenet_and_class_index(lite0):
    assert lite0.labels[281].startswith("tabby")
    assert lite0.class_index("tabby") == 281
    assert lite0.class_index("tiger cat") == 282
    assert lite0.class_index(7) == 7
    with pytest.raises(ExplainzooError, match="out of range"):
        lite0.class_index(1000)
    with pytest.raises(UnknownNameError, match="did you mean"):
        lite0.class_index("tabbby")


@pytest.mark.parametrize(
    "name,last,conv1,n_stages",
    [
        ("timm:resnet18", "layer4", "conv1", 5),
        ("timm:tf_efficientnet_lite0", "bn2", "conv_stem", 5),
        ("timm:convnext_atto", "stages.3", "stem.0", 4),
        ("timm:vit_tiny_patch16_224", "blocks.11.norm1", "patch_embed.proj", 12),
        ("timm:swin_tiny_patch4_window7_224", "norm", "patch_embed.proj", 4),
        ("timm:vgg11_bn", "features.27", "features.0", 6),
    ],
)
def test_timm_aliases_are_derived_and_verified(name, last, conv1, n_stages):
    bb = get_backbone(name)
    assert bb.layers["last"] == last
    assert bb.layers["conv1"] == conv1
    assert isinstance(bb.module(bb.layers["conv1"]), torch.nn.Conv2d)
    stages = [k for k in bb.layers if k.startswith("stage")]
    assert len(stages) == n_stages
    # every alias reads as a real (N,C,h,w) map of the model's own forward pass
    x = torch.randn(1, 3, *bb.input_size)
    for alias, path in bb.layers.items():
        seen: dict = {}
        h = bb.module(path).register_forward_hook(lambda m, i, o, seen=seen: seen.setdefault("o", o))
        try:
            with torch.no_grad():
                bb.model(x)
        finally:
            h.remove()
        fmt = bb.layer_format(path)
        m = bb.reshape(path, seen["o"], bb.input_size)
        assert m.shape == (1, fmt.channels, *fmt.size), alias
    # the last map is spatial and is the one the classifier pools
    assert bb.probe.formats[last].spatial


def test_vgg_last_is_not_the_final_max_pool():
    bb = get_backbone("timm:vgg11_bn")
    assert not isinstance(bb.module(bb.layers["last"]), torch.nn.MaxPool2d)
    assert bb.probe.formats[bb.layers["last"]].size == (14, 14)


def test_token_reshape_is_derived_not_hard_coded():
    vit = create_backbone("timm:vit_tiny_patch16_224", dynamic_img_size=True)
    fmt = vit.layer_format(vit.layers["last"])
    assert fmt.layout == "tokens" and fmt.prefix_tokens == 1 and fmt.stride == 16
    tokens = torch.randn(2, 1 + 12 * 20, 192)
    m = vit.reshape(vit.layers["last"], tokens, (192, 320))
    assert m.shape == (2, 192, 12, 20)
    torch.testing.assert_close(m[1, :, 0, 1], tokens[1, 2])  # row-major patch order
    with pytest.raises(ExplainzooError, match="cannot arrange"):
        vit.reshape(vit.layers["last"], tokens, (224, 224))


def test_register_tokens_counted_as_prefix():
    bb = create_backbone("timm:vit_little_patch16_reg4_gap_256")
    fmt = bb.layer_format(bb.layers["last"])
    # no class token, four registers: the prefix count comes from the model itself
    assert fmt.prefix_tokens == bb.model.num_prefix_tokens == 4 and fmt.size == (16, 16)


def test_unknown_layer_names_aliases_and_close_paths(vgg):
    with pytest.raises(UnknownNameError) as e:
        vgg.resolve_layer("last_cnv")
    msg = str(e.value)
    assert "did you mean 'last'" in msg and "aliases: conv1, last, stage1" in msg
    with pytest.raises(UnknownNameError, match="backbone.bn5_2"):
        vgg.resolve_layer("backbone.bn5_3")
    assert vgg.resolve_layer("backbone.bn4_1") == "backbone.bn4_1"
    assert vgg.resolve_layer(None) == "backbone.bn5_2"
    with pytest.raises(ExplainzooError, match="does not produce a spatial map"):
        vgg.layer_format("fc_out")


def test_map_layers_in_forward_order(vgg):
    layers = vgg.map_layers()
    assert layers.index("backbone.conv1") < layers.index("backbone.bn5_2")
    assert "fc_out" not in layers


# -- one builder, the family protocol, layer hints, load_backbone, scored output ---------


def _tiny_model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )


def test_builder_resolves_weights_in_one_order(tmp_path):
    from explainzoo.backbones import Hub, Preprocessing, build_backbone

    calls = []

    def hub_model():
        calls.append("hub")
        m = _tiny_model()
        torch.nn.init.constant_(m[4].bias, 7.0)
        return m

    hub = Hub(hub_model, lambda m: "test hub (tiny)", "put it somewhere")
    kw = dict(preprocessing=Preprocessing(input_size=(8, 8)), labels=["a", "b", "c"], hub=hub)
    src = _tiny_model()
    torch.save(src.state_dict(), tmp_path / "tiny.pt")
    # 1. an explicit checkpoint wins over pretrained, and the hub is never asked
    bb = build_backbone("tiny", _tiny_model, pretrained=True, checkpoint=tmp_path / "tiny.pt", **kw)
    assert bb.pretrained and bb.weights == f"checkpoint {tmp_path / 'tiny.pt'}" and not calls
    torch.testing.assert_close(bb.model[4].weight, src[4].weight)
    assert not bb.model.training
    # 3. the family's hub, with its provenance
    bb = build_backbone("tiny", _tiny_model, pretrained=True, **kw)
    assert calls == ["hub"] and bb.pretrained and bb.weights == "test hub (tiny)"
    assert bb.model[4].bias.detach()[0].item() == 7.0
    # 4. random init without pretrained
    bb = build_backbone("tiny", _tiny_model, **kw)
    assert not bb.pretrained and bb.weights == "random init" and calls == ["hub"]

    def unreachable():
        raise OSError("offline\nsecond line")

    msg = r"no pretrained weights reachable for tiny \(OSError: offline\)\. put it"
    with pytest.raises(WeightsUnavailableError, match=msg):
        build_backbone("tiny", _tiny_model, pretrained=True, **{**kw, "hub": Hub(unreachable, str, "put it")})
    with pytest.raises(WeightsUnavailableError, match="tiny has no published weights"):
        build_backbone("tiny", _tiny_model, pretrained=True, **{**kw, "hub": None})


def test_builder_offline_package_before_hub(lite0, monkeypatch):
    """2. a registered offline package is used before the family's hub (lite0 has one)."""
    import explainzoo.backbones.timm_zoo as tz
    from explainzoo.backbones import family_registry

    assert "offline package" in lite0.weights
    asked, real = [], tz._create
    monkeypatch.setattr(tz, "_create", lambda name, hub, kw: asked.append(hub) or real(name, False, kw))
    bb = family_registry.load("timm").create("tf_efficientnet_lite0", pretrained=True)
    assert asked == [False] and "offline package" in bb.weights


def test_families_follow_the_protocol():
    from explainzoo.backbones import BackboneFamily, family_registry
    from explainzoo.backbones.family import FactoryFamily, as_family

    timm_family = family_registry.load("timm")
    assert isinstance(timm_family, BackboneFamily) and timm_family.name == "timm"
    assert "resnet18" in timm_family.list_names("resnet1*")
    assert timm_family.create("resnet18").name == "timm:resnet18"

    def legacy(model_name, pretrained=False, checkpoint=None, **kwargs):
        return create_backbone("vgg11_ref", pretrained=pretrained, checkpoint=checkpoint, **kwargs)

    legacy.list_names = lambda pattern: ["only"]
    wrapped = as_family(legacy)
    assert isinstance(wrapped, FactoryFamily) and wrapped.list_names("*") == ["only"]
    assert wrapped.create("anything", num_classes=4).num_classes == 4

    class Mine(BackboneFamily):
        name = "mine"

        def create(self, model_name, pretrained=False, checkpoint=None, **kwargs):
            return create_backbone("vgg11_ref", num_classes=2)

    assert isinstance(as_family(Mine), Mine) and as_family(Mine()).list_names() == []
    assert as_family(Mine())("x").num_classes == 2  # a family is also callable as a factory
    with pytest.raises(TypeError, match="BackboneFamily"):
        as_family(42)


def test_layer_hints_come_from_the_family():
    from explainzoo.backbones import Backbone, LayerHints, family_registry

    fam = family_registry.load("timm")
    vit = get_backbone("timm:vit_tiny_patch16_224")
    assert vit.hints == LayerHints(first_conv="patch_embed.proj", stage_paths=vit.hints.stage_paths,
                                   prefix_tokens=1, nhwc=False, last=("blocks.11.norm1",))
    swin = get_backbone("timm:swin_tiny_patch4_window7_224")
    assert swin.hints.nhwc and swin.hints.last == ()
    assert fam.hints_for(_tiny_model()) is None
    # a bare timm model (no family hints given) still gets timm's, from the built-in family
    bare = Backbone("bare", vit.model, vit.preprocessing, vit.labels)
    assert bare.hints is None and bare.layer_hints == vit.hints and bare.layers == vit.layers
    # any other model: no hints, aliases derived from the probe alone; explicit hints are honoured
    plain = Backbone("plain", _tiny_model().eval(), vit.preprocessing, ["a", "b", "c"])
    assert plain.layer_hints == LayerHints() and plain.layers == {"conv1": "0", "last": "1"}
    hinted = Backbone("hinted", plain.model, vit.preprocessing, ["a", "b", "c"],
                      hints=LayerHints(last=("0",), stage_paths=("0", "1", "4")))
    assert hinted.layers == {"conv1": "0", "last": "0", "stage1": "0", "stage2": "1"}


def test_load_backbone_falls_back_loudly():
    from explainzoo.backbones import load_backbone

    bb, warning = load_backbone("vgg11_ref")  # no published weights: random init, said loudly
    assert not bb.pretrained and "RANDOM INIT" in warning and "no published weights" in warning
    with pytest.raises(WeightsUnavailableError, match="no published weights"):
        load_backbone("vgg11_ref", fallback=False)
    bb, warning = load_backbone("vgg11_ref", random_init=True, num_classes=3)
    assert warning is None and bb.num_classes == 3
    a, _ = load_backbone("vgg11_ref", seed=5)
    b, _ = load_backbone("vgg11_ref", random_init=True, seed=5)
    torch.testing.assert_close(a.model.fc_out.weight, b.model.fc_out.weight)
    state = torch.random.get_rng_state()
    load_backbone("vgg11_ref", random_init=True, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone


def test_load_backbone_pretrained_has_no_warning(lite0):
    from explainzoo.backbones import load_backbone

    bb, warning = load_backbone("timm:tf_efficientnet_lite0")
    assert bb.pretrained and warning is None


def test_scored_output_takes_the_declared_part():
    from types import SimpleNamespace

    from explainzoo.backbones import Backbone, Preprocessing, scored_output

    t = torch.randn(2, 5)
    assert scored_output(t) is t and scored_output(t, "out") is t
    assert scored_output({"out": t, "aux": t * 2}, "out") is t
    assert scored_output((t * 2, t), 1) is t
    assert scored_output(SimpleNamespace(logits=t)) is t  # Hugging Face style
    assert scored_output({"logits": t}) is t
    assert scored_output(SimpleNamespace(embeds=t), "embeds") is t
    torch.testing.assert_close(scored_output(t, lambda o: o[:, :2]), t[:, :2])
    with pytest.raises(ExplainzooError, match="no key 'seg'.*'out'"):
        scored_output({"out": t}, "seg")
    with pytest.raises(ExplainzooError, match="declare which part is scored"):
        scored_output({"out": t})
    with pytest.raises(ExplainzooError, match="no index 2"):
        scored_output((t, t), 2)
    with pytest.raises(ExplainzooError, match="not a tensor"):
        scored_output({"out": [1, 2]}, "out")

    class Seg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return {"out": self.conv(x), "aux": self.conv(x) * 0}

    bb = Backbone("seg", Seg(), Preprocessing(input_size=(8, 8)), ["bg", "fg"], output_key="out")
    out = bb.model(torch.randn(1, 3, 8, 8))
    assert bb.scored_output(out) is out["out"]
    assert get_backbone("vgg11_ref").scored_output(t) is t
