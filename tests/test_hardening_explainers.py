"""Issue 11, library side: deadlines and cancellation (item 4), the template's
check of every result (item 9) and the cost estimate hosts cap on (items 1, 2)."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from explainzoo.backbones import ExplainzooError, hook_counts
from explainzoo.explainers import (
    AttributionExplainer,
    BackboneBusy,
    Cost,
    Deadline,
    DeadlineExceeded,
    Explainer,
    ExplainerContractError,
    GridExplainer,
    Option,
    create_explainer,
    explain,
    list_explainers,
)
from explainzoo.explainers.metrics import deletion

from .tiny_nets import tiny_backbone, tiny_input


@pytest.fixture()
def tiny():
    return tiny_backbone()


def _state(bb):
    m = bb.model
    return (
        [mod.training for mod in m.modules()],
        {k: v.clone() for k, v in m.state_dict().items()},
        hook_counts(m),
    )


def _same_state(a, b) -> bool:
    return a[0] == b[0] and a[2] == b[2] and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


# -- item 4: deadlines, cancellation, the lock --------------------------------------------


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("smoothgrad", {"samples": 100_000, "batch_size": 1}),
        ("integrated_gradients", {"steps": 100_000, "batch_size": 1}),  # the adaptive loop
        ("integrated_gradients", {"steps": 100_000, "batch_size": 1, "rule": "midpoint"}),
        ("rise", {"masks": 100_000, "batch_size": 1}),
        ("occlusion", {"window": 1, "stride": 1, "batch_size": 1}),
    ],
)
def test_deadline_stops_long_loops_and_restores_state(tiny, method, options):
    x = tiny_input(2) if method != "occlusion" else torch.randn(1, 3, 64, 64)
    tiny.model.train()  # the template switches to eval mode; the caller's mode comes back
    before = _state(tiny)
    t0 = time.monotonic()
    message = rf"explainer '{method}' stopped after 0.2 s \(deadline\); use .* or raise the deadline$"
    with pytest.raises(DeadlineExceeded, match=message):
        explain(method, tiny, x, deadline=0.2, **options)
    assert time.monotonic() - t0 < 5
    assert _same_state(before, _state(tiny))
    assert tiny.model.training


def test_cancel_token_from_another_thread(tiny):
    token = threading.Event()
    threading.Timer(0.2, token.set).start()
    with pytest.raises(DeadlineExceeded, match="cancelled") as info:
        explain("smoothgrad", tiny, tiny_input(), samples=100_000, batch_size=1, cancel=token)
    assert info.value.cancelled
    d = Deadline()  # no time limit: cancellation only
    assert not d.expired and math.isinf(d.remaining())
    d.cancel()
    assert d.expired and d.remaining() == 0
    with pytest.raises(DeadlineExceeded, match="cancelled"):
        create_explainer("gradcam").explain(tiny, tiny_input(), cancel=d)


def test_active_deadline_covers_metrics_and_nested_calls(tiny):
    x = tiny_input(2)
    exp = explain("gradcam", tiny, x, layer="act1")
    d = Deadline(60)
    with d:
        assert deletion(tiny, x, exp.maps, steps=8).auc.shape == (2,)  # within the deadline: fine
        d.cancel()
        with pytest.raises(DeadlineExceeded):
            deletion(tiny, x, exp.maps, steps=8)
        with pytest.raises(DeadlineExceeded):
            explain("gradcam", tiny, x)
    assert explain("gradcam", tiny, x).maps.shape == (2, 8, 8)  # the block's deadline is gone


def test_deadline_is_per_thread(tiny):
    errors: list[BaseException] = []

    def other() -> None:
        try:
            explain("smoothgrad", tiny, tiny_input(), samples=32, batch_size=4)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    d = Deadline(60)
    d.cancel()
    with d:
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert not errors


def test_busy_backbone_times_out_with_a_clear_error(tiny):
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with tiny.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    try:
        t0 = time.monotonic()
        with pytest.raises(BackboneBusy, match="backbone tiny is busy with another request; try again"):
            explain("gradcam", tiny, tiny_input(), deadline=0.3)
        assert 0.25 < time.monotonic() - t0 < 3
        # a deadline's lock_wait bounds the wait well before the deadline itself
        t0 = time.monotonic()
        with Deadline(60, lock_wait=0.3), pytest.raises(BackboneBusy, match="backbone tiny is busy"):
            explain("gradcam", tiny, tiny_input())
        assert 0.25 < time.monotonic() - t0 < 3
    finally:
        release.set()
        t.join()
    assert explain("gradcam", tiny, tiny_input(), deadline=5).maps.shape == (1, 8, 8)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "60", True])
def test_bad_deadline_values(bad):
    with pytest.raises(ExplainzooError, match="deadline must be a number of seconds > 0"):
        Deadline(bad)
    with pytest.raises(ExplainzooError, match="lock_wait must be a number of seconds > 0"):
        Deadline(60, lock_wait=bad)


# -- item 9: the template checks every result ---------------------------------------------


class _Plugin(AttributionExplainer):
    """A fake plugin whose ``attribute`` returns what a test sets."""

    make = None

    def attribute(self, ctx):
        clean = ctx.clean()
        return type(self).make(ctx, clean)


def _plugin(make, kind=_Plugin):
    cls = type("Foo", (kind,), {"make": staticmethod(make), "__module__": "foo_plugin"})
    inst = cls()
    inst.name = "foo"
    return inst


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ctx, c: (torch.rand(5, 4, 4), c.targets, c.scores), r"returned 5 maps for a batch of 2"),
        (lambda ctx, c: (torch.rand(2, 4), c.targets, c.scores), r"raw map of shape \(2, 4\)"),
        (lambda ctx, c: (torch.rand(2, 4, 4), torch.tensor([0, 999]), c.scores), r"target 999 for a model with 3"),
        (lambda ctx, c: (torch.rand(2, 4, 4), torch.tensor([0, -5]), c.scores), r"target -5"),
        (lambda ctx, c: (torch.rand(2, 4, 4), c.targets.float(), c.scores), r"targets of dtype torch.float32"),
        (lambda ctx, c: (torch.rand(2, 4, 4), c.targets[:1], c.scores), r"1 targets for a batch of 2"),
        (lambda ctx, c: (torch.rand(2, 4, 4), c.targets, torch.tensor([1.0, float("nan")])), r"non-finite"),
        (lambda ctx, c: ("a map", c.targets, c.scores), r"raw map of shape str"),
    ],
)
def test_malformed_plugin_results_name_the_plugin(tiny, make, message):
    with pytest.raises(ExplainerContractError, match=message) as info:
        _plugin(make).explain(tiny, tiny_input(2))
    assert str(info.value).startswith("explainer 'foo' returned")
    assert "a bug in the plugin 'foo' (foo_plugin)" in str(info.value) and "\n" not in str(info.value)


def test_results_of_a_plugin_overriding_the_template(tiny):
    class Raw(Explainer):
        def _run(self, ctx):
            return self.value(ctx)

    def run(value):
        inst = type("Bar", (Raw,), {"value": staticmethod(value), "__module__": "bar_plugin"})()
        inst.name = "bar"
        return inst.explain(tiny, tiny_input(2))

    with pytest.raises(ExplainerContractError, match="returned a dict, expected an Explanation"):
        run(lambda ctx: {})
    ok = explain("gradcam", tiny, tiny_input(2), layer="act1")
    from dataclasses import replace

    with pytest.raises(ExplainerContractError, match=r"maps of shape \(2, 4, 4\), expected \(2, 8, 8\)"):
        run(lambda ctx: replace(ok, maps=torch.rand(2, 4, 4)))
    with pytest.raises(ExplainerContractError, match=r"values in \[2, 2\], expected finite values in \[0, 1\]"):
        run(lambda ctx: replace(ok, maps=ok.maps * 0 + 2))
    with pytest.raises(ExplainerContractError, match=r"values in \[nan"):
        run(lambda ctx: replace(ok, maps=ok.maps * float("nan")))
    with pytest.raises(ExplainerContractError, match="dtype torch.float64"):
        run(lambda ctx: replace(ok, maps=ok.maps.double()))
    assert run(lambda ctx: ok) is ok


def test_grid_plugin_with_wrong_tiles(tiny):
    class Tiles(GridExplainer):
        __module__ = "baz_plugin"

        def tiles(self, ctx):
            return torch.rand(2, 5, 4, 4)  # (N,K,h,w): no channel axis

    with pytest.raises(ExplainerContractError, match=r"tiles of shape \(2, 5, 4, 4\), expected a 5-D"):
        Tiles().explain(tiny, tiny_input(2), layer="act1")


def test_every_builtin_passes_the_check(tiny):
    x = tiny_input(2)
    for name in list_explainers():
        exp = explain(name, tiny, x)
        assert len(exp) == 2, name


# -- items 1, 2: the cost estimate ---------------------------------------------------------


def test_scorecam_unbounded_channels_count_the_layer(lite0):
    path = lite0.resolve_layer("last")
    channels = lite0.layer_format(path).channels
    assert channels > 256
    every = create_explainer("scorecam").estimate(lite0)  # max_channels=0: every channel
    assert every.passes == 2 + channels and every.by_option == {"max_channels": channels}
    assert create_explainer("scorecam", max_channels=64).estimate(lite0).passes == 2 + 64
    assert create_explainer("scorecam", max_channels=10**6).estimate(lite0).passes == 2 + channels
    assert create_explainer("ablationcam").estimate(lite0, layer="last").passes == 1 + channels


def test_builtin_estimates(tiny):
    sg = create_explainer("smoothgrad", samples=64, batch_size=64).estimate(tiny, (2, 3, 8, 8))
    assert (sg.passes, sg.batch, sg.images, sg.total) == (65, 64, 2, 130)
    assert sg.costliest() == "samples"
    assert create_explainer("integrated_gradients", steps=32).estimate(tiny).passes == 33
    assert create_explainer("rise", masks=100).estimate(tiny).passes == 101
    assert create_explainer("guided_gradcam").estimate(tiny).passes == 2
    assert create_explainer("gradcam").estimate(tiny, (4, 3, 8, 8)) == Cost(1, 4, 4, {})
    occ = create_explainer("occlusion", window=16, stride=8)
    assert occ.estimate(tiny, (1, 3, 64, 64)).passes == 1 + len(occ.windows((64, 64))[2]) == 1 + 49
    for name in list_explainers():
        cost = create_explainer(name).estimate(tiny, (2, 3, 8, 8))
        assert math.isfinite(cost.passes) and cost.passes >= 1 and cost.batch >= 2, name
    with pytest.raises(ExplainzooError, match="x_shape must be"):
        create_explainer("gradcam").estimate(tiny, (3, 8))


def test_plugin_cost_options_are_counted_from_declarations(tiny):
    class Fancy(AttributionExplainer):
        options = {
            "draws": Option(10, "draws", low=0, high=1000, cost="passes", unbounded=0),
            "grid": Option(4, "cell size in pixels", low=1, high=64, cost="inverse"),
            "batch_size": Option(16, "copies per pass", low=1, high=64, cost="batch"),
            "alpha": Option(0.5, "no cost", low=0.0, high=1.0),
        }

        def attribute(self, ctx):
            c = ctx.clean()
            return torch.rand(ctx.x.shape[0], 8, 8), c.targets, c.scores

    cost = Fancy(draws=50).estimate(tiny, (1, 3, 8, 8))
    assert cost.passes == 1 + 50 + 4 and cost.batch == 16 and cost.by_option == {"draws": 50, "grid": 4}
    assert math.isinf(Fancy(draws=0).estimate(tiny).passes)  # unbounded, no override: refuse it
    assert Fancy().explain(tiny, tiny_input()).maps.shape == (1, 8, 8)
