"""The benchmark harness's pure helpers, on tiny inputs (benchmarks never run as tests).

Nothing here needs the ``bench`` extra; the one adapter check skips without
pytorch-grad-cam.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmarks import results as B
from benchmarks import rivals as R
from benchmarks.targets import evaluate_targets
from benchmarks.timing import (
    agreement,
    geomean,
    interleave_order,
    leak_check,
    measure_peak,
    median,
    pearson,
    plan_rounds,
    ratio,
    rss_mb,
    time_interleaved,
)


def test_interleave_order_rotates_and_calls_each_once_per_round():
    order = interleave_order(["ours", "a", "b"], 3)
    assert order == ["ours", "a", "b", "a", "b", "ours", "b", "ours", "a"]
    assert interleave_order(["x"], 2) == ["x", "x"]
    assert interleave_order([], 3) == []
    with pytest.raises(ValueError):
        interleave_order(["x"], -1)


def test_time_interleaved_records_each_call_in_order_after_warmup():
    calls: list[str] = []
    fake = {"ours": 1.0, "theirs": 3.0}

    def clock(fn, sync):
        fn()
        return fake[calls[-1]]

    fns = {k: (lambda k=k: calls.append(k)) for k in fake}
    times = time_interleaved(fns, rounds=4, warmup=2, clock=clock)
    assert calls[:4] == ["ours", "theirs", "theirs", "ours"]  # the warm-up rounds
    assert calls[4:] == interleave_order(["ours", "theirs"], 4)
    assert times == {"ours": [1.0] * 4, "theirs": [3.0] * 4}
    assert ratio(median(times["ours"]), median(times["theirs"])) == pytest.approx(1 / 3)


def test_medians_ratios_and_round_planning():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(median([]))
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0))
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert math.isnan(geomean([math.nan, -1.0]))
    assert plan_rounds(1.0, 10.0, 3, 15) == 10
    assert plan_rounds(100.0, 10.0, 3, 15) == 3
    assert plan_rounds(0.001, 10.0, 3, 15) == 15


def test_agreement_is_pearson_after_min_max_normalisation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 8, 8, generator=g)
    assert agreement(a, a) == pytest.approx(1.0)
    assert agreement(a, 5 * a + 3) == pytest.approx(1.0)  # scale and offset do not matter
    assert pearson(a, -a).tolist() == pytest.approx([-1.0, -1.0])
    b = a.clone()
    b[1] = torch.rand(8, 8, generator=g)
    r = pearson(a, b)
    assert r[0] == pytest.approx(1.0) and r[1] < 0.5
    assert agreement(a, b) == pytest.approx(float(r[1]))  # the worst image of the batch
    zeros = torch.zeros(1, 4, 4)
    assert agreement(zeros, zeros) == 1.0  # two blank maps agree
    assert math.isnan(agreement(zeros, a[:1, :4, :4]))
    with pytest.raises(ValueError):
        pearson(a, a[:1])


def test_memory_helpers_and_leak_check():
    assert rss_mb() > 0
    peak = measure_peak(lambda: torch.ones(4 * 2**20).sum())  # 16 MiB
    assert peak.growth_mb >= 0
    if peak.exact:
        assert peak.growth_mb > 10
    hooks = [0]
    kept: list[torch.Tensor] = []

    def leaky():
        kept.append(torch.ones(2**18))  # 1 MiB per call, kept alive
        hooks[0] += 1

    rep = leak_check(leaky, calls=30, warmup=2, hooks=lambda: hooks[0], sample_every=10)
    assert rep.calls == 30 and rep.hooks_left == 32
    assert len(rep.samples_mb) == 4
    clean = leak_check(lambda: torch.ones(2**18).sum(), calls=30, warmup=2)
    assert clean.rss_growth_mb < 5 and clean.hooks_left == 0
    # 30 MiB stay alive; the allocator may first refill pages freed by earlier tests,
    # so only part of it has to show up as new RSS (17 MiB seen in a full suite run)
    assert rep.rss_growth_mb > clean.rss_growth_mb + 8


def test_reductions_match_our_documented_maps():
    a = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # (1,3,1,1)
    assert R.reduction_for("saliency", {})(a).item() == 9.0
    assert R.reduction_for("smoothgrad", {"square": False})(a).item() == 3.0
    assert R.reduction_for("smoothgrad", {"square": True})(a).item() == 9.0
    assert R.reduction_for("integrated_gradients", {"sign": "abs"})(a).item() == 0.0
    assert R.reduction_for("integrated_gradients", {"sign": "signed"})(-a).item() == 0.0
    assert R.reduction_for("guided_backprop", {})(a).item() == 3.0
    assert R.reduction_for("occlusion", {})(a).item() == 1.0
    assert R.upsample(torch.ones(2, 3, 3), (6, 6)).shape == (2, 6, 6)


def test_token_reshape_transform_drops_the_class_token():
    from explainzoo.backbones.layers import LayerFormat

    class FakeBackbone:
        def layer_format(self, path):
            return LayerFormat("tokens", 4, (2, 2), 8.0, prefix_tokens=1)

    x = torch.zeros(2, 3, 16, 16)
    cell = R.Cell(FakeBackbone(), nn.Identity(), x, torch.zeros(2, dtype=torch.long), "blocks.0")
    tokens = torch.arange(2 * 5 * 4, dtype=torch.float32).view(2, 5, 4)
    m = cell.reshape_transform()(tokens)
    assert m.shape == (2, 4, 2, 2)
    assert torch.equal(m[0, :, 0, 0], tokens[0, 1])  # first patch token, class token dropped


def _cell(method, ours, theirs, f=1.0, backbone="timm:tf_efficientnet_lite0", n=1, r=1.0):
    c = B.CellResult(backbone, n, method, "layer", base_method=method)
    c.impls["ours"] = B.ImplResult("ours", "X", [ours * n], n)
    c.impls["F"] = B.ImplResult("F", "F", [f * n], n)
    for lib, t in theirs.items():
        c.impls[lib] = B.ImplResult(lib, "Y", [t * n], n, r=r)
    return c


def test_targets_are_evaluated_from_the_cells():
    cells = [
        _cell("gradcam", 1.10, {"pytorch-grad-cam": 3.0, "captum": 1.5, "torchcam": 1.6}),
        _cell("gradcam", 1.10, {"pytorch-grad-cam": 3.0}, backbone="timm:resnet50"),  # > 1.05 x F
        _cell("saliency", 0.9, {"captum": 1.0}),
    ]
    leaks = [B.LeakResult("gradcam", "ours", "bb", 200, 1.0, 5.0, 0, 10.0)]
    t = {x.name: x for x in evaluate_targets(cells, leaks)}
    assert t["Gradient CAMs <= 1.15 x F (ResNet-50 <= 1.05 x F)"].holds is False
    assert "ResNet-50" in t["Gradient CAMs <= 1.15 x F (ResNet-50 <= 1.05 x F)"].detail
    assert t["Gradient CAMs <= 0.4 x pytorch-grad-cam"].holds is True
    assert t["Gradient CAMs <= 0.9 x fastest of Captum/torchcam (where it is > 1.2 x F)"].holds is True
    assert t["Saliency <= 1.0 x Captum Saliency"].holds is True
    assert t["RSS growth < 20 MB over 200 calls (ours, every method)"].holds is True
    assert t["Ablation-CAM >= 2x faster than pytorch-grad-cam"].holds is None


@pytest.mark.slow  # importing pytorch-grad-cam (cv2, sklearn) takes seconds
def test_pytorch_grad_cam_adapter_agrees_with_ours_on_a_tiny_net():
    pytest.importorskip("pytorch_grad_cam")
    from explainzoo.backbones import Backbone, Preprocessing
    from explainzoo.explainers import create_explainer

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).eval()
    bb = Backbone("tiny", model, Preprocessing(input_size=(32, 32)), [f"c{i}" for i in range(5)])
    x = torch.randn(2, 3, 32, 32)
    targets = torch.tensor([1, 3])
    cell = R.Cell(bb, R.rival_copy(model), x, targets, "3")
    impls, skipped = R.rival_impls("gradcam", cell, {"pytorch-grad-cam": "test"})
    assert [i.library for i in impls] == ["pytorch-grad-cam"]
    assert set(skipped) == {"captum", "torchcam"}  # "not installed" per the libraries given
    theirs = impls[0].call()
    impls[0].close()
    ours = create_explainer("gradcam").explain(bb, x, target=targets.tolist(), layer="3").maps
    assert agreement(ours, theirs) > 0.99
    assert sum(len(m._forward_hooks) for m in cell.rival_model.modules()) == 0
