"""Faithfulness metrics: deletion/insertion, sanity check, pointing game, chance level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explainzoo.backbones import Backbone, ExplainzooError, Preprocessing
from explainzoo.explainers import AttributionExplainer, Context, explain
from explainzoo.explainers.metrics import (
    MAX_STEPS,
    blur,
    cascading_randomization,
    deletion,
    insertion,
    pointing_game,
    random_baseline,
    random_maps,
    spearman,
    ssim,
)

REGION = (slice(4, 8), slice(6, 10))  # rows, cols of the pixels the net looks at


class RegionNet(nn.Module):
    """Logit 0 = 0.5 * sum of ReLU(channel 0) over REGION; logit 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
        mask = torch.zeros(16, 16)
        mask[REGION] = 0.5
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.features(x))[:, 0]
        s = (a * self.mask).sum(dim=(1, 2))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


@pytest.fixture()
def region_bb() -> Backbone:
    return Backbone(
        "region", RegionNet(), Preprocessing(input_size=(16, 16)), ["region", "other"],
        aliases={"conv1": "features", "last": "features"},
    )


@pytest.fixture()
def region_x() -> torch.Tensor:
    x = torch.rand(1, 3, 16, 16) * 0.2
    x[0, 0][REGION] = 1.0
    return x


def right_map() -> torch.Tensor:
    m = torch.zeros(1, 16, 16)
    m[0][REGION] = 1.0
    return m


def test_right_map_beats_random_on_the_region_net(region_bb, region_x):
    good = right_map()
    rnd = random_maps(1, (16, 16), resolution=(4, 4), seed=3)
    d_good = deletion(region_bb, region_x, good, steps=16)
    d_rnd = deletion(region_bb, region_x, rnd, steps=16)
    i_good = insertion(region_bb, region_x, good, steps=16)
    i_rnd = insertion(region_bb, region_x, rnd, steps=16)
    assert d_good.probs.shape == (1, 17) and d_good.fractions.shape == (17,)
    assert d_good.fractions[0] == 0 and d_good.fractions[-1] == 1
    assert d_good.auc.item() < d_rnd.auc.item()
    assert i_good.auc.item() > i_rnd.auc.item()
    # deleting the 16 region pixels (step 1 of 16) leaves logits (0, 0): p = 0.5
    assert d_good.probs[0, 1].item() == pytest.approx(0.5, abs=1e-6)
    assert d_good.forward_passes == 17 + 1
    chance = random_baseline(region_bb, region_x, resolution=(4, 4), steps=16, trials=2)
    assert d_good.mean_auc < chance["deletion_auc"]
    assert i_good.mean_auc > chance["insertion_auc"]


def test_curve_golden_and_batched(region_bb, region_x):
    """AUC is the trapezoid over [0, 1]; a batch equals its images one by one."""
    good = right_map()
    c = deletion(region_bb, region_x, good, target=0, steps=4, batch_size=2)
    expected = torch.trapezoid(c.probs[0], torch.linspace(0, 1, 5))
    assert c.auc.item() == pytest.approx(expected.item(), abs=1e-6)
    x2 = torch.cat([region_x, region_x.flip(-1)])
    m2 = torch.cat([good, random_maps(1, (16, 16), (4, 4), seed=1)])
    both = insertion(region_bb, x2, m2, target=0, steps=4, batch_size=3)
    one = insertion(region_bb, x2[1:], m2[1:], target=0, steps=4)
    assert torch.allclose(both.probs[1], one.probs[0], atol=1e-6)


def test_metrics_are_deterministic(region_bb, region_x):
    a = random_baseline(region_bb, region_x, resolution=(4, 4), steps=8, trials=2, seed=7)
    b = random_baseline(region_bb, region_x, resolution=(4, 4), steps=8, trials=2, seed=7)
    assert a == b
    assert torch.equal(random_maps(2, (16, 16), (4, 4), seed=5), random_maps(2, (16, 16), (4, 4), seed=5))
    assert not torch.equal(random_maps(1, (16, 16), (4, 4), seed=5), random_maps(1, (16, 16), (4, 4), seed=6))


def test_baselines_and_errors(region_bb, region_x):
    m = right_map()
    for base in ("zero", "mean", "blur", torch.zeros(3, 1, 1)):
        c = deletion(region_bb, region_x, m, steps=2, baseline=base)
        assert torch.isfinite(c.probs).all()
    with pytest.raises(ExplainzooError, match="baseline"):
        deletion(region_bb, region_x, m, steps=2, baseline="grey")
    with pytest.raises(ExplainzooError, match="cap"):
        deletion(region_bb, region_x, m, steps=MAX_STEPS + 1)
    with pytest.raises(ExplainzooError, match="do not match"):
        deletion(region_bb, region_x, torch.zeros(1, 8, 8))
    const = torch.ones(1, 3, 12, 12)
    assert torch.allclose(blur(const, 2.0), const)


def test_random_maps_are_smooth_at_the_layer_resolution():
    m = random_maps(2, (64, 64), resolution=(4, 4), seed=0)
    assert m.shape == (2, 64, 64) and m.min() >= 0 and m.max() <= 1
    rough = random_maps(2, (64, 64), seed=0)
    tv = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean()  # noqa: E731
    assert tv(m) < tv(rough) / 5


def test_pointing_game_golden():
    m = torch.zeros(2, 10, 10)
    m[0, 2, 7] = 1.0  # row 2, col 7 -> (x=7, y=2)
    m[1, 8, 1] = 1.0
    hits = pointing_game(m, box=(5, 0, 10, 4))
    assert hits.tolist() == [True, False]
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[8, 3] = True
    assert pointing_game(m, mask=mask).tolist() == [False, False]
    assert pointing_game(m, mask=mask, tolerance=2).tolist() == [False, True]
    with pytest.raises(ExplainzooError, match="exactly one"):
        pointing_game(m)
    with pytest.raises(ExplainzooError, match="empty"):
        pointing_game(m, box=(5, 5, 5, 9))


def test_spearman_and_ssim_match_references():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 24, 24, generator=g)
    b = (a + 0.3 * torch.rand(2, 24, 24, generator=g)).clamp(0, 1)
    b[1, :5] = 0.0  # ties
    rho = spearman(a, b)
    from scipy.stats import spearmanr

    for i in range(2):
        assert rho[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-5)
        ref = structural_similarity(
            a[i].numpy().astype(np.float64), b[i].numpy().astype(np.float64),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        )
        assert ssim(a, b)[i].item() == pytest.approx(ref, abs=1e-5)
    assert spearman(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert spearman(torch.zeros(1, 5, 5), a[:1, :5, :5]).item() == 0.0


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.fc(a.mean(dim=(2, 3)))


def test_sanity_check_decorrelates_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = SmallConvNet()
    bb = Backbone(
        "small", model, Preprocessing(input_size=(32, 32)), [f"c{i}" for i in range(5)],
        aliases={"conv1": "conv1", "last": "conv3"},
    )
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = cascading_randomization("gradcam", bb, x, steps=4, seed=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert res.layers[0] == "fc" and res.randomized[-1] == 4
    assert res.spearman.shape == (4, 2) and res.ssim.shape == (4, 2)
    assert res.spearman[-1].mean() < 0.5
    assert res.mean_spearman < 0.8
    again = cascading_randomization("gradcam", bb, x, steps=4, seed=0)
    assert torch.equal(res.spearman, again.spearman) and torch.equal(res.ssim, again.ssim)
    # the untouched model still gives the original map
    assert torch.allclose(explain("gradcam", bb, x).maps, res.original)


class InputEdges(AttributionExplainer):
    """A model-independent "explainer" (an edge detector): must FAIL the sanity check."""

    def attribute(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = ctx.require_x()
        g = x.mean(dim=1)
        edges = (g[:, 1:, 1:] - g[:, :-1, 1:]).abs() + (g[:, 1:, 1:] - g[:, 1:, :-1]).abs()
        n = x.shape[0]
        return nn.functional.pad(edges, (1, 0, 1, 0)), torch.zeros(n, dtype=torch.long), torch.zeros(n)


def test_sanity_check_flags_a_model_independent_map():
    torch.manual_seed(0)
    bb = Backbone("small", SmallConvNet(), Preprocessing(input_size=(32, 32)), [f"c{i}" for i in range(5)])
    res = cascading_randomization(InputEdges(), bb, torch.randn(1, 3, 32, 32), steps=3)
    assert res.spearman.min() == pytest.approx(1.0) and res.ssim.min() == pytest.approx(1.0)


@pytest.mark.slow
def test_gradcam_on_lite0_beats_chance(lite0, chelsea):
    """Real maps beat smooth random maps of the same resolution (7x7 noise).

    Chelsea is a hard case for insertion (the cat classes share the
    probability; single random maps range 0.15-0.20 against Grad-CAM's 0.195),
    hence three random trials for the chance level.
    """
    x = lite0.preprocess(chelsea)
    exp = explain("gradcam", lite0, x)
    assert exp.raw is not None and exp.maps is not None
    d = deletion(lite0, x, exp.maps, exp.targets, steps=16)
    i = insertion(lite0, x, exp.maps, exp.targets, steps=16)
    chance = random_baseline(
        lite0, x, exp.targets, resolution=tuple(exp.raw.shape[-2:]), steps=16, trials=3, seed=0
    )
    assert d.mean_auc < chance["deletion_auc"]
    assert i.mean_auc > chance["insertion_auc"]


def test_evaluation_rows_chance_and_summary(region_bb):
    """The numbers of an evaluation: one row per explainer, a chance row, averaged by summary."""
    from explainzoo.explainers.metrics import RANDOM, evaluate, faithfulness, summary

    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    ev = evaluate([("img", image)], [region_bb], ["gradcam", "saliency", "filters"], steps=4,
                  sanity_steps=0, trials=1, box=(6, 4, 10, 8))
    rows = {r.explainer: r for r in ev.rows}
    assert set(rows) == {"gradcam", "saliency", "filters", RANDOM}
    assert "grid" in rows["filters"].error
    for name in ("gradcam", "saliency", RANDOM):
        r = rows[name]
        assert not r.error and 0 <= r.deletion_auc <= 1 and 0 <= r.insertion_auc <= 1
        assert r.forward_passes > 0 and r.pointing is not None
    assert set(ev.curves[("img", "region")]) == {"gradcam", "saliency", RANDOM}
    assert ev.maps[("img", "region")]["gradcam"].shape == (16, 16)
    assert [s["explainer"] for s in summary(ev)][-1] == RANDOM
    x = region_bb.preprocess(image)
    exp = explain("gradcam", region_bb, x)
    f = faithfulness(region_bb, x, exp, steps=4)
    d = deletion(region_bb, x, exp.maps, exp.targets, steps=4)
    assert f.deletion_auc == pytest.approx(d.mean_auc) and 0 <= f.random_deletion_auc <= 1
