"""demo/service.py: every tab's function, called directly (no Gradio, no browser).

Bad inputs of every kind must end in a clear :class:`ExplainzooError` (which the
app shows as a message) or in a correct result, never in another exception.
"""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainzoo.backbones import ExplainzooError, UnknownNameError
from explainzoo.backbones.registry import PluginInfo
from explainzoo.demo.service import AUTO_TARGET, CAPTION_STEPS, EVALUATE_COLUMNS, DemoService, Limits
from explainzoo.explainers import CAMExplainer, Option, explainer_registry
from explainzoo.explainers.base import Context

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
CHELSEA = EXAMPLES / "chelsea.jpg"
COFFEE = EXAMPLES / "coffee.jpg"
BACKBONES = ["timm:tf_efficientnet_lite0", "vgg11_ref", "timm:resnet18"]
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def service() -> DemoService:
    return DemoService(BACKBONES, cache_size=3)


# --------------------------------------------------------------------------- bad files


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _gif_300_frames() -> bytes:
    frames = [Image.fromarray(np.asarray(Image.open(CHELSEA).convert("RGB").resize((96, 64))))]
    for i in range(1, 300):
        f = Image.new("RGB", (96, 64), (0, 0, 255))
        f.putpixel((i % 96, i // 96), (255, 255, 255))
        frames.append(f)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=20)
    return buf.getvalue()


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    corrupt = CHELSEA.read_bytes()
    files["corrupt.jpg"] = corrupt[: len(corrupt) // 4]
    files["text.png"] = b"hello, I am a text file pretending to be an image\n" * 10
    files["one_pixel.png"] = _png(Image.new("RGB", (1, 1), (255, 0, 0)))
    files["empty.png"] = b""
    out = {}
    for name, data in files.items():
        out[name] = tmp / name
        out[name].write_bytes(data)
    return out


def _good_odd_files(tmp: Path) -> dict[str, Path]:
    chelsea = Image.open(CHELSEA).convert("RGB")
    gray16 = (np.asarray(chelsea.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    rgba = chelsea.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(chelsea.size))
    files = {
        "gray16.png": _png(Image.fromarray(gray16)),
        "rgba.png": _png(rgba),
        "frames300.gif": _gif_300_frames(),
        "palette.png": _png(chelsea.convert("P")),
        "webp.webp": _png(chelsea, format="WEBP"),
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp / name
        out[name].write_bytes(data)
    assert Image.open(out["gray16.png"]).mode.startswith("I")
    return out


def _tab_calls(service: DemoService, image):
    return {
        "explain": lambda: service.explain(image, BACKBONES[0], "gradcam"),
        "compare_backbones": lambda: service.compare_backbones(image, "gradcam", [BACKBONES[0]]),
        "compare_explainers": lambda: service.compare_explainers(image, BACKBONES[0], ["gradcam"]),
        "activations": lambda: service.activations(image, BACKBONES[0], "conv1", 16),
    }


@pytest.mark.parametrize("bad", ["corrupt.jpg", "text.png", "one_pixel.png", "empty.png"])
def test_bad_files_give_clear_errors_in_every_image_tab(service, tmp_path, bad):
    path = _bad_files(tmp_path)[bad]
    for tab, call in _tab_calls(service, str(path)).items():
        with pytest.raises(ExplainzooError) as err:
            call()
        msg = str(err.value)
        assert "Traceback" not in msg and len(msg) < 400, (tab, msg)
        assert any(w in msg for w in ("corrupt", "not an image", "pixels", "empty")), (tab, msg)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return _good_odd_files(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("name", ["gray16.png", "rgba.png", "frames300.gif", "palette.png", "webp.webp"])
def test_odd_but_valid_files_work(service, odd_files, name):
    path = odd_files[name]
    r = service.explain(str(path), BACKBONES[0], "gradcam")
    assert r.overlay.size == (224, 224) and np.isfinite(r.map).all()
    assert r.map.min() >= 0.0 and r.map.max() <= 1.0
    assert service.activations(str(path), BACKBONES[0], "conv1", 8).image.size[0] >= 256
    if name == "gray16.png":  # 16-bit scaled, not clipped to white: the cat is still seen
        assert np.asarray(r.overlay).std() > 10


def test_odd_files_in_the_compare_tabs(service, odd_files):
    files = odd_files
    assert (
        len(
            service.compare_backbones(
                str(files["frames300.gif"]), "gradcam", [BACKBONES[0]], faithfulness=False
            ).items
        )
        == 1
    )
    assert (
        len(
            service.compare_explainers(
                str(files["rgba.png"]), BACKBONES[0], ["saliency"], faithfulness=False
            ).items
        )
        == 1
    )


# --------------------------------------------------------------------------- Explain


def test_explain_chelsea_on_the_embedded_default(service):
    r = service.explain(str(CHELSEA), "timm:tf_efficientnet_lite0", "gradcam")
    assert r.pretrained and "offline package" in r.weights and r.warning is None
    assert r.layer == "bn2"  # the resolved "last" alias
    assert r.predictions[0].index in CAT_CLASSES and r.target == r.predictions[0].index
    assert len(r.predictions) == 5
    probs = [p.prob for p in r.predictions]
    assert probs == sorted(probs, reverse=True) and 0.0 < sum(probs) <= 1.0 + 1e-6
    assert r.overlay.size == (224, 224) and r.raw.size == (224, 224)
    assert r.map.shape == (224, 224) and r.map.max() == pytest.approx(1.0)
    assert r.seconds > 0
    # the overlay actually carries the map: not one flat colour
    assert np.asarray(r.overlay).std() > 10


def test_explain_target_by_name_index_and_label(service):
    r = service.explain(str(COFFEE), BACKBONES[0], "gradcam", target="espresso")
    assert r.target == 967 and r.target_label == "espresso"
    assert r.predictions[0].index == 967  # the offline weights really classify the photo
    bb = service.load(BACKBONES[0]).backbone
    for same in ("967", 967, 967.0, "967: espresso", " Espresso "):
        assert service.resolve_target(bb, same) == 967
    for auto in (None, "", AUTO_TARGET):
        assert service.resolve_target(bb, auto) is None
    other = service.explain(str(COFFEE), BACKBONES[0], "gradcam", target="281")
    assert other.target == 281 and not np.allclose(other.map, r.map)


def test_explain_layers_aliases_and_paths(service):
    choices = service.layer_choices(BACKBONES[0])
    values = [v for _, v in choices]
    bb = service.load(BACKBONES[0]).backbone
    assert values[: len(bb.layers)] == list(bb.layers)  # aliases first
    assert set(bb.map_layers()) <= set(values)
    assert service.explain(str(CHELSEA), BACKBONES[0], "gradcam", layer="stage4").layer == bb.layers["stage4"]
    assert service.explain(str(CHELSEA), BACKBONES[0], "gradcam", layer="blocks.5").layer == "blocks.5"
    assert service.explain(str(CHELSEA), BACKBONES[0], "gradcam", layer="default").layer == "bn2"
    # an input-level method ignores the layer choice
    assert service.explain(str(CHELSEA), BACKBONES[0], "saliency", layer="stage3").layer is None


def test_random_init_backbone_carries_a_visible_warning(service):
    r = service.explain(str(CHELSEA), "vgg11_ref", "gradcam")
    assert not r.pretrained and r.weights == "random init"
    assert r.warning and "RANDOM INIT" in r.warning
    assert "RANDOM INIT" in service.backbone_status("vgg11_ref")
    assert "offline package" in service.backbone_status(BACKBONES[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "timm:resnet50"}, "this demo offers"),  # real, but not offered
        ({"backbone": "no_such_net"}, "unknown backbone"),
        ({"backbone": ""}, "non-empty"),
        ({"backbone": 42}, "non-empty string"),
        ({"explainer": "grad_cam"}, "did you mean 'gradcam'"),
        ({"explainer": "filters"}, "Filters or Activations tab"),
        ({"layer": "blocks.99"}, "unknown layer"),
        ({"layer": "conv_head.weight"}, "unknown layer"),
        ({"layer": "x" * 1000}, "too long"),
        ({"target": "not a class at all"}, "unknown class"),
        ({"target": 1000}, "out of range"),
        ({"target": -1}, "out of range"),
        ({"target": 2.5}, "whole number"),
        ({"target": True}, "class index or name"),
        ({"target": ["a"]}, "class index or name"),
        ({"cmap": "rainbowz"}, "unknown colormap"),
        ({"alpha": 1.5}, r"\[0, 1\]"),
        ({"alpha": float("nan")}, r"\[0, 1\]"),
        ({"alpha": "lots"}, "number"),
        ({"options": "steps=10"}, "unknown option"),
        ({"options": "nonsense"}, "key=value"),
        ({"options": "__class__=1"}, "invalid option name|unknown option"),
        ({"options": 42}, "key=value"),
    ],
)
def test_explain_rejects_bad_inputs_clearly(service, kwargs, match):
    args = {"image": str(CHELSEA), "backbone": BACKBONES[0], "explainer": "gradcam", **kwargs}
    with pytest.raises(ExplainzooError, match=match) as err:
        service.explain(**args)
    assert "Traceback" not in str(err.value)


def test_class_choices(service):
    r = service.explain(str(CHELSEA), BACKBONES[0], "gradcam")
    choices = service.class_choices(BACKBONES[0], r.predictions)
    assert choices[0][1] == AUTO_TARGET
    assert [v for _, v in choices[1:6]] == [str(p.index) for p in r.predictions]
    assert len(choices) == 6
    full = service.class_choices(BACKBONES[0], r.predictions, all_classes=True)
    assert full[:6] == choices and len(full) == 1 + 1000 and len({v for _, v in full}) == len(full)


# --------------------------------------------------------------------------- options and caps


class CostlyCAM(CAMExplainer):
    """A test explainer with options that set how much work it does."""

    description = "test: a CAM with costly options"
    options = {
        "steps": Option(200, "how many passes", low=1, high=10000, cost="gradients"),
        "n_masks": Option(4000, "how many masks", low=1, cost="passes"),
        "n_trials": Option(10, "a count the caps table does not know", low=1, cost="gradients"),
        "stride": Option(0, "smaller costs more; 0: automatic", low=0, cost="inverse"),
        "seed": Option(0, "not a cost"),
        "noise": Option(0.1, "a float", low=0.0, high=1.0),
    }
    needs_gradient = False

    def combine(self, A, G, ctx: Context):
        return A.mean(1)


@pytest.fixture
def costly_plugin():
    """Register CostlyCAM as if a plugin distribution had installed it."""
    infos = explainer_registry._scan()
    name = "costly_cam_demo_test"
    infos[name] = PluginInfo(name, f"{__name__}:CostlyCAM", "explainzoo-demo-test")
    try:
        yield name
    finally:
        explainer_registry.refresh()


def test_installed_plugin_appears_with_no_demo_change(service, costly_plugin):
    assert costly_plugin in service.explainer_names("map")
    r = service.explain(str(CHELSEA), BACKBONES[0], costly_plugin)
    assert r.explainer == costly_plugin and r.overlay.size == (224, 224)


def test_costly_options_are_capped(costly_plugin):
    svc = DemoService(BACKBONES[:1])
    caps = svc.limits.cost_caps
    # defaults above the cap are lowered to it; others stay
    assert svc.parse_options(costly_plugin, None) == {"steps": caps["gradients"], "n_masks": caps["passes"]}
    assert svc.parse_options(costly_plugin, "steps=8, noise=0.5")["steps"] == 8
    with pytest.raises(ExplainzooError, match="cap of 64"):
        svc.parse_options(costly_plugin, "steps=5000")
    with pytest.raises(ExplainzooError, match="cap of 256"):
        svc.parse_options(costly_plugin, {"n_masks": 100000})
    assert svc.parse_options(costly_plugin, "n_trials=64")["n_trials"] == 64
    with pytest.raises(ExplainzooError, match="cap of 64"):  # count-like: max(4x default, 64)
        svc.parse_options(costly_plugin, "n_trials=65")
    assert svc.parse_options(costly_plugin, "seed=123456")["seed"] == 123456  # not a cost
    assert svc.parse_options(costly_plugin, "stride=0")["stride"] == 0  # automatic
    assert svc.parse_options(costly_plugin, "stride=32")["stride"] == 32
    with pytest.raises(ExplainzooError, match="floor of 16"):
        svc.parse_options(costly_plugin, "stride=1")
    with pytest.raises(ExplainzooError, match="must be <= 1.0"):  # the Option's own bounds
        svc.parse_options(costly_plugin, "noise=3")
    with pytest.raises(ExplainzooError, match="must be a int"):
        svc.parse_options(costly_plugin, "steps=lots")
    with pytest.raises(ExplainzooError, match="too long"):
        svc.parse_options(costly_plugin, "steps=1," * 100)
    tight = DemoService(BACKBONES[:1], limits=Limits(option_caps={"steps": 4}))  # an operator's cap by name
    with pytest.raises(ExplainzooError, match="cap of 4"):
        tight.parse_options(costly_plugin, "steps=5")


class OddlyNamedCAM(CAMExplainer):
    """A plugin whose costly options have names no table could guess."""

    description = "test: costs declared, names arbitrary"
    options = {
        "zap": Option(1000, "work grows with it", low=1, high=1 << 20, cost="passes"),
        "chunk": Option(500, "images per chunk", low=1, high=1 << 20, cost="batch"),
        "grain": Option(0, "smaller costs more; 0: automatic", low=0, cost="inverse"),
        "wobble": Option(1000, "free: declares no cost", low=0),
    }
    needs_gradient = False

    def combine(self, A, G, ctx: Context):
        return A.mean(1)


def test_a_plugins_declared_costs_are_capped_with_no_demo_change(monkeypatch):
    infos = explainer_registry._scan()
    monkeypatch.setitem(infos, "oddly_named_cam", PluginInfo("oddly_named_cam", f"{__name__}:OddlyNamedCAM", "x"))
    try:
        svc = DemoService(BACKBONES[:1])
        passes, batch = svc.limits.cost_caps["passes"], svc.limits.cost_caps["batch"]
        floor = svc.limits.cost_floors["inverse"]
        assert svc.parse_options("oddly_named_cam", None) == {"zap": passes, "chunk": batch}
        with pytest.raises(ExplainzooError, match=f"zap={passes + 1} is above this demo's cap of {passes}"):
            svc.parse_options("oddly_named_cam", f"zap={passes + 1}")
        with pytest.raises(ExplainzooError, match=f"cap of {batch}"):
            svc.parse_options("oddly_named_cam", {"chunk": 10_000})
        with pytest.raises(ExplainzooError, match=f"floor of {floor}"):
            svc.parse_options("oddly_named_cam", "grain=1")
        assert svc.parse_options("oddly_named_cam", "wobble=100000")["wobble"] == 100000
    finally:
        explainer_registry.refresh()


def test_one_explain_request_runs_the_model_once_for_gradcam(service):
    bb = service.load(BACKBONES[0]).backbone
    calls: list[int] = []
    handle = bb.model.register_forward_pre_hook(lambda mod, args: calls.append(1))
    try:
        r = service.explain(str(CHELSEA), BACKBONES[0], "gradcam")
    finally:
        handle.remove()
    assert len(calls) == 1, f"{len(calls)} forward passes for one Explain request"
    assert len(r.predictions) == 5 and r.predictions[0].index in CAT_CLASSES


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("integrated_gradients", "steps=500", "cap of 64"),
        ("smoothgrad", "samples=1000", "cap of 64"),
        ("rise", "masks=4000", "cap of 256"),
        ("occlusion", "stride=1", "floor of 16"),
        ("scorecam", "max_channels=2048", "cap of 256"),
    ],
)
def test_builtin_costly_options_are_capped(service, method, options, match):
    if method not in service.explainer_names("map"):
        pytest.skip(f"{method} is not installed")
    with pytest.raises(ExplainzooError, match=match):
        service.explain(str(CHELSEA), BACKBONES[0], method, options=options)


# --------------------------------------------------------------------------- Compare backbones


def test_compare_backbones(service):
    r = service.compare_backbones(str(CHELSEA), "gradcam", BACKBONES, faithfulness=False)
    assert len(r.items) == 3 and not r.errors
    captions = [i.caption for i in r.items]
    for name, cap in zip(BACKBONES, captions, strict=True):
        assert name.split(":")[-1] in cap and "layer " in cap and " ms" in cap
    assert "bn2" in captions[0] and "RANDOM INIT" not in captions[0]
    assert "RANDOM INIT" in captions[1] and "RANDOM INIT" in captions[2]
    assert len(r.warnings) == 2
    assert all(i.image.size == (224, 224) for i in r.items)
    # the same map as the Explain tab gives for that backbone
    single = service.explain(str(CHELSEA), BACKBONES[0], "gradcam")
    np.testing.assert_allclose(r.items[0].map, single.map, atol=1e-6)


def test_compare_backbones_alias_and_errors(service):
    r = service.compare_backbones(str(CHELSEA), "gradcam", BACKBONES[:2], layer="stage2", faithfulness=False)
    assert len(r.items) == 2 and "blocks.1" in r.items[0].caption and "bn2" in r.items[1].caption
    with pytest.raises(ExplainzooError, match="no backbone could be explained"):
        service.compare_backbones(str(CHELSEA), "gradcam", BACKBONES[:2], layer="stage9")
    with pytest.raises(ExplainzooError, match="layer alias"):
        service.compare_backbones(str(CHELSEA), "gradcam", BACKBONES[:2], layer="blocks.1")
    with pytest.raises(ExplainzooError, match="at most 4"):
        service.compare_backbones(str(CHELSEA), "gradcam", BACKBONES * 2)
    with pytest.raises(UnknownNameError, match="unknown backbone"):
        service.compare_backbones(str(CHELSEA), "gradcam", [BACKBONES[0], "timm:evil"])
    with pytest.raises(ExplainzooError, match="list of names"):
        service.compare_backbones(str(CHELSEA), "gradcam", {"a": 1})
    default = service.compare_backbones(str(CHELSEA), "gradcam", [], faithfulness=False)
    assert len(default.items) == 1 and "tf_efficientnet_lite0" in default.items[0].caption


# --------------------------------------------------------------------------- Compare explainers


def test_compare_explainers(service):
    r = service.compare_explainers(str(CHELSEA), BACKBONES[0], ["gradcam", "saliency"], faithfulness=False)
    assert [i.caption.split(" |")[0] for i in r.items] == ["gradcam", "saliency"]
    assert "layer bn2" in r.items[0].caption and "layer input" in r.items[1].caption
    assert not r.errors and not r.warnings
    defaults = service.default_compare_explainers()
    assert defaults[0] == "gradcam" and len(defaults) == min(len(service.explainer_names("map")), 6)
    with pytest.raises(ExplainzooError, match="Filters or Activations"):
        service.compare_explainers(str(CHELSEA), BACKBONES[0], ["gradcam", "activations"])
    with pytest.raises(ExplainzooError, match="at most 6"):
        service.compare_explainers(str(CHELSEA), BACKBONES[0], ["gradcam"] * 7)
    r2 = service.compare_explainers(str(CHELSEA), "vgg11_ref", ["gradcam"], layer="stage3", faithfulness=False)
    assert "backbone.bn3_2" in r2.items[0].caption and r2.warnings


def test_compare_captions_carry_the_deletion_auc(service, monkeypatch):
    import explainzoo.demo.comparisons as service_module

    calls: list[int] = []
    real = service_module.deletion

    def counting(*args, **kwargs):
        calls.append(args[4] if len(args) > 4 else kwargs["steps"])
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "deletion", counting)
    pattern = re.compile(r" \| deletion AUC (\d\.\d{3}) \(random (\d\.\d{3}), lower is better\)$")
    r = service.compare_explainers(str(CHELSEA), BACKBONES[0], ["gradcam", "gradcam_pp"])
    matches = [pattern.search(i.caption) for i in r.items]
    assert all(matches), [i.caption for i in r.items]
    assert [i.caption.split(" |")[0] for i in r.items] == ["gradcam", "gradcam_pp"]
    # same backbone, resolution and class: the random curve is computed once and shared
    assert matches[0].group(2) == matches[1].group(2)  # type: ignore[union-attr]
    assert calls == [CAPTION_STEPS] * 3
    calls.clear()
    b = service.compare_backbones(str(CHELSEA), "gradcam", [BACKBONES[0]])
    assert pattern.search(b.items[0].caption) and b.items[0].caption.startswith("tf_efficientnet_lite0: ")
    # the same map, so the same AUC as in Compare explainers
    assert pattern.search(b.items[0].caption).group(1) == matches[0].group(1)  # type: ignore[union-attr]
    assert len(calls) == 2
    calls.clear()
    off = service.compare_explainers(str(CHELSEA), BACKBONES[0], ["gradcam"], faithfulness="false")
    assert "deletion AUC" not in off.items[0].caption and not calls
    with pytest.raises(ExplainzooError, match="true or false"):
        service.compare_backbones(str(CHELSEA), "gradcam", [BACKBONES[0]], faithfulness="maybe")


# --------------------------------------------------------------------------- Evaluate


def test_evaluate_gives_rows_per_pair_and_chance(service):
    seen: list[tuple[float, str]] = []
    r = service.evaluate(
        str(CHELSEA),
        [BACKBONES[0]],
        ["gradcam", "saliency"],
        steps=2,
        sanity_steps=1,
        progress=lambda f, m: seen.append((f, m)),
    )
    assert r.headers == [h for h, _ in EVALUATE_COLUMNS]
    col = {h: i for i, h in enumerate(r.headers)}
    assert [(row[col["backbone"]], row[col["explainer"]]) for row in r.rows] == [
        (BACKBONES[0], "gradcam"),
        (BACKBONES[0], "saliency"),
        (BACKBONES[0], "random"),
    ]
    for row in r.rows:
        assert row[col["error"]] == ""
        for h in ("deletion AUC ↓", "insertion AUC ↑", "sanity Spearman ↓", "sanity SSIM ↓"):
            assert isinstance(row[col[h]], float) and np.isfinite(row[col[h]]), (row, h)
        assert 0.0 <= row[col["deletion AUC ↓"]] <= 1.0 and 0.0 <= row[col["insertion AUC ↑"]] <= 1.0
    assert (r.steps, r.sanity_steps, r.warnings) == (2, 1, [])
    assert r.figure.mode == "RGB" and min(r.figure.size) > 200
    assert np.asarray(r.figure).std() > 5
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and any("(3/3)" in m for _, m in seen)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backbones": ["timm:evil"]}, UnknownNameError, "unknown backbone"),
        ({"explainers": ["gradcom"]}, UnknownNameError, "unknown explainer.*gradcam"),
        ({"explainers": ["activations"]}, ExplainzooError, "Filters or Activations"),
        ({"steps": 65}, ExplainzooError, "steps must be between 1 and 64"),
        ({"steps": 0}, ExplainzooError, "steps must be between 1 and 64"),
        ({"steps": 2.5}, ExplainzooError, "whole number"),
        ({"steps": "many"}, ExplainzooError, "whole number"),
        ({"sanity_steps": 13}, ExplainzooError, "sanity steps must be between 0 and 12"),
        ({"backbones": BACKBONES * 2}, ExplainzooError, "at most 4 backbones"),
        (
            {"backbones": BACKBONES, "explainers": ["gradcam", "saliency", "layercam"]},
            ExplainzooError,
            "at most 6 backbone x explainer pairs.*3 x 3 = 9",
        ),
    ],
)
def test_evaluate_rejects_bad_inputs_clearly(service, kwargs, error, match):
    args = {"backbones": [BACKBONES[0]], "explainers": ["gradcam"], "steps": 2, **kwargs}
    with pytest.raises(error, match=match):
        service.evaluate(str(CHELSEA), **args)


def test_evaluate_bad_image_is_a_clear_error(service, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("not an image\n" * 20)
    with pytest.raises(ExplainzooError, match="not an image"):
        service.evaluate(str(fake), [BACKBONES[0]], ["gradcam"], steps=2)


# --------------------------------------------------------------------------- Filters


def test_filters(service):
    r = service.filters(BACKBONES[0], "conv1")
    assert r.layer == "conv_stem" and "32 kernels" in r.caption
    assert r.image.mode == "RGB" and r.image.size[0] >= 256
    assert r.grid.shape[0] == 3  # RGB tiles for the stem
    deep = service.filters(BACKBONES[0], "blocks.1.0.conv_pw")
    assert deep.grid.shape[0] == 1 and "kernels of blocks.1.0.conv_pw" in deep.caption
    values = [v for _, v in service.conv_layer_choices("vgg11_ref")]
    assert values[0] == "conv1" and "backbone.conv2" in values
    assert "backbone.conv5_2" not in values  # too many kernels to draw
    with pytest.raises(ExplainzooError, match="too many kernels"):
        service.filters("vgg11_ref", "backbone.conv5_2")
    with pytest.raises(ExplainzooError, match="not a convolution layer"):
        service.filters(BACKBONES[0], "bn2")
    with pytest.raises(ExplainzooError, match="did you mean"):
        service.filters(BACKBONES[0], "conv_stemm")


# --------------------------------------------------------------------------- Activations


def test_activations(service):
    r = service.activations(str(CHELSEA), BACKBONES[0], "stage2", 16)
    assert r.layer == "blocks.1" and "16 of 24 channels" in r.caption and "strongest first" in r.caption
    assert r.image.size[0] >= 256 and r.grid.shape[0] == 1
    full = service.activations(str(CHELSEA), BACKBONES[0], "conv1", 256)
    assert "32 of 32 channels" in full.caption
    for bad, match in [
        (0, "between 1 and 256"),
        (10_000, "between 1 and 256"),
        ("many", "whole number"),
        (2.5, "whole number"),
    ]:
        with pytest.raises(ExplainzooError, match=match):
            service.activations(str(CHELSEA), BACKBONES[0], "conv1", bad)
    with pytest.raises(ExplainzooError, match="unknown layer"):
        service.activations(str(CHELSEA), BACKBONES[0], "../../etc/passwd", 8)


# --------------------------------------------------------------------------- configuration and cache


def test_startup_validates_backbone_names():
    with pytest.raises(UnknownNameError, match="timm model"):
        DemoService(["timm:not_a_real_model"])
    with pytest.raises(UnknownNameError, match="unknown backbone"):
        DemoService("vgg11_ref,bogus")
    with pytest.raises(ExplainzooError, match="no backbones"):
        DemoService(" , ")
    svc = DemoService("vgg11_ref, timm:resnet18")
    assert svc.backbones == ("vgg11_ref", "timm:resnet18") and svc.default_backbone == "vgg11_ref"
    from explainzoo.backbones import CURATED

    assert DemoService().backbones == CURATED
    assert DemoService().default_backbone == "timm:tf_efficientnet_lite0"


def test_cache_is_bounded_lru_and_builds_once_under_concurrency():
    svc = DemoService(["vgg11_ref", "timm:resnet18"], cache_size=1)
    got = []
    threads = [threading.Thread(target=lambda: got.append(svc.load("vgg11_ref"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert svc.cache.loads == 1
    svc.load("timm:resnet18")
    assert svc.cache.cached() == ["timm:resnet18"] and svc.cache.loads == 2
    with pytest.raises(ExplainzooError, match=">= 1"):
        DemoService(["vgg11_ref"], cache_size=0)


def test_concurrent_explanations_match_sequential(service):
    jobs = [(name, CHELSEA) for name in BACKBONES] * 3
    sequential = {(n, i): service.explain(str(i), n, "gradcam").map for n, i in set(jobs)}
    results: list[tuple[tuple[str, Path], np.ndarray]] = []
    errors: list[BaseException] = []

    def work(name: str, img: Path) -> None:
        try:
            results.append(((name, img), service.explain(str(img), name, "gradcam").map))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == len(jobs)
    for key, m in results:
        np.testing.assert_allclose(m, sequential[key], atol=1e-5)


def test_configure_offline_hub_reaches_an_already_imported_hub(monkeypatch):
    import huggingface_hub.constants as hub_constants

    from explainzoo.demo.service import configure_offline_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    configure_offline_hub()
    assert hub_constants.HF_HUB_OFFLINE is True and hub_constants.is_offline_mode()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # an explicit choice is respected
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    configure_offline_hub()
    assert hub_constants.HF_HUB_OFFLINE is False


# --------------------------------------------------------------------------- targets (issue 12)


def test_explain_contrast_and_probability_scores(service):
    plain = service.explain(str(CHELSEA), BACKBONES[0], "gradcam", target="tiger cat")
    contrast = service.explain(str(CHELSEA), BACKBONES[0], "gradcam", target="tiger cat", contrast="tabby")
    prob = service.explain(str(CHELSEA), BACKBONES[0], "gradcam", target="tiger cat", score="probability")
    both = service.explain(str(CHELSEA), BACKBONES[0], "gradcam", target="tiger cat", contrast="tabby",
                           score="probability")
    assert contrast.target_description == "tiger cat - tabby (logit contrast)"
    assert prob.target_description.endswith("(softmax probability)") and 0 < prob.score < 1
    assert "probability contrast" in both.target_description and -1 < both.score < 1
    assert contrast.target == plain.target == 282  # the class the page is about
    probs = {p.index: p.prob for p in plain.predictions}
    assert abs(both.score - (probs[282] - probs[281])) < 1e-4  # p(tiger cat) - p(tabby)
    assert abs(prob.score - probs[282]) < 1e-4
    assert not np.allclose(contrast.map, plain.map)  # what separates the two classes, not the whole cat
    with pytest.raises(ExplainzooError, match="score must be one of"):
        service.explain(str(CHELSEA), BACKBONES[0], "gradcam", score="odds")
    with pytest.raises(ExplainzooError, match="unknown class"):
        service.explain(str(CHELSEA), BACKBONES[0], "gradcam", contrast="not a class at all")


def test_compare_tabs_pass_the_same_target_to_every_backbone(service):
    r = service.compare_backbones(str(CHELSEA), "gradcam", BACKBONES[:2], faithfulness=False,
                                  target="tiger cat", contrast="tabby")
    assert len(r.items) == 2 and not r.errors
    assert all("explains tiger cat - tabby (logit contrast)" in it.caption for it in r.items)
    e = service.compare_explainers(str(CHELSEA), BACKBONES[0], ["gradcam", "saliency"], target="tiger cat",
                                   faithfulness=False, score="probability")
    assert len(e.items) == 2 and all("class tiger cat" in it.caption for it in e.items)
