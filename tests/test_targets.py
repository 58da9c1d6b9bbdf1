"""Targets (issue 12): any score, one function for every method and metric.

Golden values on tiny hand-weighted nets (tests/tiny_nets.py), the linearity
of Grad-CAM before its ReLU on the real EfficientNet-Lite0 (offline ImageNet
weights, skimage's chelsea), and agreement with pytorch-grad-cam's
``SemanticSegmentationTarget`` on a random-init torchvision DeepLab.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explainzoo.backbones import Backbone, ExplainzooError, Preprocessing
from explainzoo.explainers import create_explainer, explain
from explainzoo.explainers import targets as T
from explainzoo.explainers.mechanics import fill_value
from explainzoo.explainers.metrics import deletion, insertion

from .tiny_nets import _pattern, act_and_grad, logits64, one_torch_thread, tiny_backbone, tiny_input

TIGER_CAT, TABBY = 282, 281

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def _gradcam_by_hand(model, x, score_of_logits):
    """Grad-CAM before ReLU at act1 of TinyNet for any score of the logits, float64."""
    m = copy.deepcopy(model).double()
    z = F.conv2d(x.double(), m.conv1.weight, m.conv1.bias, padding=1)
    a = F.relu(z).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(score_of_logits(m.head(a)).sum(), a)
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1).detach()


# -- golden values on the tiny classifier ----------------------------------------------------


def test_contrast_map_is_the_difference_of_the_class_maps_golden():
    bb, x = tiny_backbone(), tiny_input(2)
    cam = create_explainer("gradcam")
    contrast = cam.raw_map(bb, x, target=T.Contrast("bee", "ant"))
    a, ga, _ = act_and_grad(bb.model, x, torch.tensor([1, 1]))
    _, gb, _ = act_and_grad(bb.model, x, torch.tensor([0, 0]))
    by_hand = ((ga - gb).mean(dim=(2, 3), keepdim=True) * a).sum(1)
    torch.testing.assert_close(contrast.double(), by_hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(contrast, cam.raw_map(bb, x, target=1) - cam.raw_map(bb, x, target=0),
                               rtol=1e-5, atol=1e-6)


def test_classes_map_is_the_sum_of_the_class_maps_golden():
    bb, x = tiny_backbone(), tiny_input(2)
    cam = create_explainer("gradcam")
    group = cam.raw_map(bb, x, target=T.Classes(["ant", 2]))
    torch.testing.assert_close(group, cam.raw_map(bb, x, target=0) + cam.raw_map(bb, x, target=2),
                               rtol=1e-5, atol=1e-6)
    by_hand = _gradcam_by_hand(bb.model, x, lambda z: z[:, 0] + z[:, 2])
    torch.testing.assert_close(group.double(), by_hand, rtol=1e-5, atol=1e-6)
    exp = explain("gradcam", bb, x, target=T.Classes(["ant", 2]))
    torch.testing.assert_close(exp.scores.double(), logits64(bb.model, x)[:, [0, 2]].sum(1), rtol=1e-5, atol=1e-6)


def test_probability_input_gradient_is_the_softmax_jacobian_row():
    bb, x = tiny_backbone(), tiny_input(2)
    explainer = create_explainer("saliency")
    with explainer.context(bb, x, T.Probability("cat")) as ctx:
        got = ctx.input_gradients(ctx.require_x())
    m = copy.deepcopy(bb.model).double()
    xd = x.double().requires_grad_(True)
    z = m(xd)
    jac = torch.stack([torch.autograd.grad(z[:, k].sum(), xd, retain_graph=True)[0] for k in range(3)], 1)
    p = z.detach().softmax(1)
    c = 2
    row = (p[:, c, None] * (F.one_hot(torch.tensor(c), 3).double() - p))  # d p_c / d z_k, (N,K)
    expected = (row[:, :, None, None, None] * jac).sum(1)
    torch.testing.assert_close(got.grad.double(), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got.scores.double(), p[:, c], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("target,score", [
    (T.Contrast(2, 0), lambda z: z[:, 2] - z[:, 0]),
    (T.Probability(1), lambda z: z.softmax(1)[:, 1]),
])
def test_integrated_gradients_completeness(target, score):
    bb, x = tiny_backbone(), tiny_input(2)
    ig = create_explainer("integrated_gradients", steps=128)
    with ig.context(bb, x, target) as ctx:
        attr, _, scores = ig.attributions(ctx)
    base = fill_value(bb, "black", x).expand_as(x[0])[None]
    delta = score(logits64(bb.model, x)) - score(logits64(bb.model, base))
    total = attr.double().sum(dim=(1, 2, 3))
    assert float((total - delta).abs().max()) <= 1e-3 * max(1.0, float(delta.abs().max())), (total, delta)
    torch.testing.assert_close(scores.double(), score(logits64(bb.model, x)), rtol=1e-5, atol=1e-6)


# -- the tiny segmentation net and Region ---------------------------------------------------


class TinySeg(nn.Module):
    """conv1 (3->4, 3x3) -> ReLU -> conv2 (4->2, 1x1): a dense (N,2,8,8) output in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.conv1.weight.copy_(_pattern((4, 3, 3, 3), 11, 5))
            self.conv1.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))
            self.conv2.weight.copy_(torch.tensor([[0.5, -0.3, 0.2, 0.1], [1.0, 0.6, -0.4, 0.8]]).view(2, 4, 1, 1))
            self.conv2.bias.zero_()

    def forward(self, x):
        return {"out": self.conv2(self.act1(self.conv1(x))), "aux": x.mean()}


def _seg_backbone() -> Backbone:
    return Backbone("tinyseg", TinySeg().eval(), Preprocessing(input_size=(8, 8)), ["background", "dog"],
                    aliases={"last": "act1", "conv1": "conv1"}, output_key="out")


def test_region_scores_the_class_inside_the_mask_and_maps_stay_inside():
    bb, x = _seg_backbone(), tiny_input(2)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:4, 2:6] = True
    target = T.Region("dog", mask)
    with torch.no_grad():
        out = bb.model(x)["out"]
    expected = (out[:, 1] * mask).sum(dim=(1, 2))
    for method in ("hirescam", "layercam", "saliency", "gradcam"):
        exp = explain(method, bb, x, target=target)
        torch.testing.assert_close(exp.scores, expected, rtol=1e-5, atol=1e-6)
        assert exp.logits is None  # a dense output has no class logits to show
        assert exp.targets.tolist() == [1, 1]
        if method in ("hirescam", "layercam"):  # gradient x activation: only inside the mask
            assert float(exp.raw[:, ~mask].abs().max()) == 0 and float(exp.raw[:, mask].abs().max()) > 0
    near = F.max_pool2d(mask[None, None].float(), 3, 1, 1)[0, 0].bool()  # the 3x3 conv's reach
    sal = explain("saliency", bb, x, target=target).maps
    assert float(sal[:, ~near].max()) == 0 and float(sal[:, mask].max()) > 0
    box = explain("hirescam", bb, x, target=T.Region(1, (2, 1, 6, 4)))  # the same region as a box
    torch.testing.assert_close(box.raw, explain("hirescam", bb, x, target=target).raw)


def test_region_grad_cam_agrees_with_pytorch_grad_cam_on_deeplab():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False).eval()
    bb = Backbone("deeplab", model, Preprocessing(input_size=(128, 128)), [f"voc{i}" for i in range(21)],
                  aliases={"last": "backbone.16", "conv1": "backbone.0.0"}, output_key="out")
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    mask = np.zeros((128, 128), dtype=np.float32)
    mask[32:96, 16:80] = 1
    ours = explain("gradcam", bb, x, target=T.Region(15, torch.from_numpy(mask))).maps[0]

    class Out(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, inp):
            return self.m(inp)["out"]

    twin = copy.deepcopy(model)  # pytorch-grad-cam writes parameter grads: keep ours clean
    with pgc.GradCAM(model=Out(twin), target_layers=[twin.backbone["16"]]) as cam:
        theirs = cam(input_tensor=x, targets=[SemanticSegmentationTarget(15, mask)])[0]
    r = float(np.corrcoef(ours.numpy().ravel(), theirs.ravel())[0, 1])
    print(f"Region Grad-CAM vs pytorch-grad-cam SemanticSegmentationTarget: r = {r:.6f}")
    assert r >= 0.99


# -- the real model: Lite0 with ImageNet weights on chelsea --------------------------------


def test_contrast_on_lite0_is_linear_before_relu(lite0, chelsea):
    x = lite0.preprocess(chelsea)
    cam = create_explainer("gradcam")
    contrast = cam.raw_map(lite0, x, target=T.Contrast("tiger cat", "tabby"))
    diff = cam.raw_map(lite0, x, target=TIGER_CAT) - cam.raw_map(lite0, x, target=TABBY)
    assert float((contrast - diff).abs().max()) <= 1e-4 * float(diff.abs().max())
    exp = explain("gradcam", lite0, x, target=T.parse("contrast:tiger cat,tabby"))
    torch.testing.assert_close(exp.scores, exp.logits[:, TIGER_CAT] - exp.logits[:, TABBY])
    assert exp.targets.tolist() == [-1]


def test_explanation_records_the_target(lite0, chelsea):
    x = lite0.preprocess(chelsea)
    exp = explain("gradcam", lite0, x, target=T.Contrast("tiger cat", "tabby"))
    assert exp.target_description == "tiger cat - tabby (logit contrast)", (
        "base.Explainer._result must pass **ctx.result_fields() to the Explanation"
    )
    assert explain("saliency", lite0, x, target=T.Probability("tabby")).target_description == \
        "tabby (softmax probability)"
    assert exp[0].target.description == exp.target_description


# -- outputs that are no plain logits ----------------------------------------------------------


class _Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.proj = nn.Conv2d(6, 5, 1)

    def forward(self, x):
        return self.proj(self.act(self.conv1(x))).mean(dim=(2, 3))  # (N,5) embedding


def _embedding_backbone() -> Backbone:
    torch.manual_seed(1)
    return Backbone("embed", _Embed().eval(), Preprocessing(input_size=(8, 8)), [],
                    aliases={"last": "act", "conv1": "conv1"})


def test_similarity_on_an_embedding_model():
    bb, x = _embedding_backbone(), tiny_input(2)
    with torch.no_grad():
        emb = bb.model(x)
    ref = emb[1]
    exp = explain("gradcam", bb, x, target=T.Similarity(ref))
    torch.testing.assert_close(exp.scores, F.cosine_similarity(emb, ref[None], dim=1))
    assert exp.logits is None and exp.targets.tolist() == [-1, -1]
    assert torch.isfinite(exp.maps).all()
    ig = explain("integrated_gradients", bb, x, target=T.Similarity(emb), steps=8)  # one reference per image
    torch.testing.assert_close(ig.scores, torch.ones(2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", [None, 3, T.Probability(1), T.Sigmoid(0), T.Contrast(0, 1)])
def test_class_targets_on_an_embedding_model_are_one_line_errors(target):
    with pytest.raises(ExplainzooError, match="no class labels.*Similarity") as err:
        explain("gradcam", _embedding_backbone(), tiny_input(1), target=target)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("wrap,key", [
    (lambda z: {"logits": z, "extra": z * 0}, None),
    (lambda z: (z * 0, z), 1),
    (lambda z: type("ModelOutput", (), {"logits": z})(), None),
])
def test_dict_tuple_and_logits_outputs_are_scored_in_one_place(wrap, key):
    plain = tiny_backbone()

    class Wrapped(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return wrap(self.m(x))

    bb = Backbone("wrapped", Wrapped(plain.model), plain.preprocessing, plain.labels,
                  aliases={"last": "m.act1", "conv1": "m.conv1"}, output_key=key)
    x = tiny_input(2)
    for method, options in (("gradcam", {}), ("scorecam", {}), ("integrated_gradients", {"steps": 4})):
        a = explain(method, plain, x, target=T.Contrast(2, 0), **options)
        b = explain(method, bb, x, target=T.Contrast(2, 0), **options)
        torch.testing.assert_close(a.maps, b.maps)
        torch.testing.assert_close(b.logits, a.logits)
    d = deletion(bb, x, a.maps, target=T.Probability(2), steps=4)
    torch.testing.assert_close(d.probs, deletion(plain, x, a.maps, target=T.Probability(2), steps=4).probs)


# -- bad targets: one-line errors with the fix ------------------------------------------------


def _one_line(fn, pattern):
    with pytest.raises(ExplainzooError, match=pattern) as err:
        fn()
    assert "\n" not in str(err.value), str(err.value)


def test_bad_targets_are_one_line_errors(lite0):
    bb, x, seg = tiny_backbone(), tiny_input(2), _seg_backbone()
    _one_line(lambda: explain("gradcam", lite0, torch.randn(1, 3, 64, 64), target=T.Contrast("tiger cta", 281)),
              "did you mean")
    _one_line(lambda: explain("gradcam", seg, x, target=T.Region(1, torch.ones(4, 4))),
              "Region mask is 4x4 but the model's output is 8x8")
    _one_line(lambda: explain("gradcam", seg, x, target=T.Region(1, torch.ones(3, 8, 8))), "3 Region masks")
    _one_line(lambda: explain("gradcam", seg, x, target=T.Probability(1)), "needs \\(N, classes\\) logits.*Region")
    _one_line(lambda: explain("gradcam", bb, x, target=T.Region(1, torch.ones(8, 8))), "dense \\(N,K,H,W\\)")
    _one_line(lambda: explain("gradcam", bb, x, target=lambda out: out[:, :2]), "returned shape \\(2, 2\\)")
    _one_line(lambda: explain("gradcam", bb, x, target=lambda out: out[:, 0].detach()), "not differentiable")
    _one_line(lambda: explain("saliency", bb, x, target=lambda out: float(out[0, 0])), "returned a float")
    _one_line(lambda: explain("gradcam", bb, x, target=T.Similarity(torch.ones(7))), "7 values.*3 per image")
    _one_line(lambda: T.parse("ratio:1,2"), "unknown target kind 'ratio'")
    _one_line(lambda: T.parse("contrast:tabby"), "two classes")
    _one_line(lambda: T.Classes([]), "non-empty list")
    _one_line(lambda: T.Region(None, torch.ones(8, 8)), "one class")


def test_parse_the_command_line_forms(lite0):
    assert T.parse("contrast:tiger cat,tabby").resolve(lite0, n=1).description == \
        "tiger cat - tabby (logit contrast)"
    group = T.parse("classes:281,282,283").resolve(lite0, n=1)
    assert isinstance(group, T.Classes) and [int(p.indices[0]) for p in group.parts] == [281, 282, 283]
    prob = T.parse("prob:espresso").resolve(lite0, n=1)
    assert isinstance(prob, T.Probability) and prob.description == "espresso (softmax probability)"
    sig = T.parse("sigmoid:3")
    assert isinstance(sig, T.Sigmoid) and int(sig.resolve(lite0, n=1).indices) == 3
    assert T.parse("281").spec == 281 and T.parse("tabby").spec == "tabby"
    assert T.parse("top1").spec is None and T.parse("").spec is None
    assert T.parse("281: tabby, tabby cat").spec == 281
    both = T.parse("contrast:tabby, tabby cat|tiger cat").resolve(lite0, n=1)
    assert [int(p.indices[0]) for p in both.parts] == [TABBY, TIGER_CAT]


# -- metrics measure the same score ----------------------------------------------------------


@pytest.mark.parametrize("target,score", [
    (T.Probability(2), lambda z: z.softmax(1)[:, 2]),
    (T.Contrast(2, 0), lambda z: z.softmax(1)[:, 2] - z.softmax(1)[:, 0]),  # its probability form
    (T.Classes([0, 1]), lambda z: z.softmax(1)[:, :2].sum(1)),
    (T.Sigmoid(1), lambda z: z[:, 1].sigmoid()),
    (lambda z: z[:, 0] * 2 - z[:, 1], lambda z: z[:, 0] * 2 - z[:, 1]),
])
def test_deletion_and_insertion_measure_the_target(target, score):
    bb, x = tiny_backbone(), tiny_input(2)
    exp = explain("gradcam", bb, x, target=target)
    d = deletion(bb, x, exp.maps, target=target, steps=4)
    expected = score(logits64(bb.model, x)).float()
    torch.testing.assert_close(d.probs[:, 0], expected, rtol=1e-5, atol=1e-6)
    i = insertion(bb, x, exp.maps, target=target, steps=4, baseline="zero")
    torch.testing.assert_close(i.probs[:, -1], expected, rtol=1e-5, atol=1e-6)
    if not isinstance(target, T.Contrast | T.Classes):  # no probability form: the explained value itself
        torch.testing.assert_close(d.probs[:, 0], exp.scores, rtol=1e-5, atol=1e-6)
    assert d.score == T.resolve(target, bb, n=2).description
