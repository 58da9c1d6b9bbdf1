"""Input-gradient methods: saliency, SmoothGrad, Integrated Gradients.

Gradients come from :meth:`Context.input_gradients` (``torch.autograd.grad``
w.r.t. a copy of the input: no parameter ``.grad`` is written), chunked by
``batch_size`` for the many-copy methods. Guided Backprop lives in
:mod:`explainzoo.explainers.guided`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from explainzoo.backbones import ExplainzooError

from .base import AttributionExplainer, Context
from .mechanics import chunks, fill_value, generator
from .options import Option, batch_option, fill_option, seed_option
from .targets import Target


class Saliency(AttributionExplainer):
    """Vanilla gradient saliency: (d score_y / d image)^2, max over colour channels.

    Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks, 2013
    (https://arxiv.org/abs/1312.6034). The notes square the gradient (the paper
    takes its absolute value: same ranking, sharper contrast); the map is then
    divided by its maximum.
    """

    description = "squared input gradient of the class score, max over colour channels"
    paper = "Simonyan et al., Deep Inside Convolutional Networks, 2013 (arXiv:1312.6034)"

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        grad = ctx.input_gradients(ctx.require_x()).grad  # its forward pass is the clean pass
        clean = ctx.clean()
        return (grad**2).amax(dim=1), clean.targets, clean.scores


class SmoothGrad(AttributionExplainer):
    """SmoothGrad: the input gradient averaged over noisy copies of the image.

    Smilkov et al., SmoothGrad: removing noise by adding noise, 2017
    (https://arxiv.org/abs/1706.03825)::

        M(x) = 1/n sum_k d S_c / d x (x + e_k),   e_k ~ N(0, sigma^2),
        sigma = noise * (max(x) - min(x))

    The class c is the target of the clean image. As in the paper's figures
    the map is |M| (or M^2 with ``square=true``), max over colour channels.
    The noise comes from a generator seeded with ``seed`` for every image, so
    a batch and its images one by one give the same maps. The paper suggests
    n = 50; the default is n = 16.
    """

    description = "SmoothGrad: input gradient averaged over Gaussian-noised copies"
    paper = "Smilkov et al., SmoothGrad, 2017 (arXiv:1706.03825)"
    options = {
        "samples": Option(16, "number of noisy copies n (the paper suggests 50)", low=1, high=100_000,
                          cost="gradients"),
        "noise": Option(0.15, "noise std as a fraction of the image's value range (paper: 0.1-0.2)",
                        low=0.0, high=10.0),
        "square": Option(False, "show the squared mean gradient instead of its absolute value"),
        "seed": seed_option(),
        "batch_size": batch_option(8),
    }

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        x, clean = ctx.require_x(), ctx.clean()
        n_samples = self.config["samples"]
        raw = []
        for i in range(x.shape[0]):
            xi = x[i]
            sigma = self.config["noise"] * float(xi.max() - xi.min())
            g = generator(self.config["seed"])
            total = torch.zeros_like(xi)
            for a, b in chunks(n_samples, self.config["batch_size"]):
                noise = torch.stack([torch.randn(xi.shape, generator=g) for _ in range(b - a)])
                noisy = xi[None] + sigma * noise.to(device=xi.device, dtype=xi.dtype)
                total += ctx.input_gradients(noisy, clean.target.image(i)).grad.sum(dim=0)
            mean = total / n_samples
            raw.append((mean * mean if self.config["square"] else mean.abs()).amax(dim=0))
        return torch.stack(raw), clean.targets, clean.scores


def path_points(steps: int, rule: str) -> tuple[Tensor, Tensor]:
    """(alphas, weights) of a ``steps``-point rule for integrals over [0, 1].

    ``midpoint``: alphas (k + 1/2)/steps, equal weights; ``trapezoid``:
    alphas k/(steps-1) (both ends), end weights halved; ``right``: the paper's
    right Riemann sum, alphas k/steps for k = 1..steps. Weights sum to 1.
    """
    if rule == "midpoint":
        alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
        weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    elif rule == "right":
        alphas = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    elif rule == "trapezoid":
        if steps < 2:
            raise ExplainzooError("the trapezoid rule needs steps >= 2; pass steps=2 or more")
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
    else:
        raise ExplainzooError(f"rule must be 'midpoint', 'trapezoid' or 'right', got {rule!r}")
    return alphas, weights


PathEvaluator = Callable[[Tensor], tuple[Tensor, Tensor]]
"""alphas (K,) -> (d score / d input at the K path points (K,3,H,W), their scores (K,))."""


def adaptive_path_average(evaluate: PathEvaluator, delta: Tensor, steps: int, batch_size: int) -> Tensor:
    """The path-averaged gradient int_0^1 g(a) da with nodes placed where they are needed.

    The trapezoid rule on nodes a_0 = 0 < ... < a_m = 1. A quarter of the
    ``steps`` budget goes to uniform nodes; the rest is added in small rounds,
    each interval getting new nodes in proportion to its measured error
    ``|S(b) - S(a) - (b - a)(f(a) + f(b)) / 2|``, with f = g . delta the
    derivative of the score along the path: the score change over an
    interval is known exactly from the forward passes, so the error of the
    rule is measured, not estimated. Networks whose score jumps over a small
    part of the path (a black baseline often does this) need far fewer
    steps for the same completeness gap than a uniform grid.
    """
    if steps < 3:
        alphas, _ = path_points(steps, "midpoint")
        grads, _ = evaluate(alphas)
        return grads.double().mean(dim=0)
    d = delta.double()
    nodes: dict[float, tuple[Tensor, float, float]] = {}  # a -> (g, S(a), f(a))

    def add(alphas: list[float]) -> None:
        for a, b in chunks(len(alphas), batch_size):
            grads, scores = evaluate(torch.tensor(alphas[a:b], dtype=torch.float64))
            for al, g, sc in zip(alphas[a:b], grads, scores.double().tolist()):
                nodes[al] = (g, sc, float((g.double() * d).sum()))

    first = max(2, steps // 4)
    add([1.0] + [k / (first - 1) for k in range(first - 1)])  # the image itself first
    per_round = max(1, min(batch_size, steps // 16))
    while len(nodes) < steps:
        keys = sorted(nodes)
        spans = list(zip(keys[:-1], keys[1:]))
        err = torch.tensor([
            abs(nodes[b][1] - nodes[a][1] - (b - a) * (nodes[a][2] + nodes[b][2]) / 2) for a, b in spans
        ], dtype=torch.float64)
        if float(err.sum()) == 0:
            break
        budget = min(per_round, steps - len(nodes))
        share = err / err.sum() * budget
        alloc = share.floor().long()
        alloc[(share - alloc).argsort(descending=True)[: budget - int(alloc.sum())]] += 1
        new = [a + (b - a) * j / (k + 1) for (a, b), k in zip(spans, alloc.tolist()) for j in range(1, k + 1)]
        new = [a for a in new if a not in nodes]
        if not new:
            break
        add(new)
    keys = sorted(nodes)
    total = torch.zeros_like(d)
    for a, b in zip(keys[:-1], keys[1:]):
        total += (b - a) / 2 * (nodes[a][0].double() + nodes[b][0].double())
    return total


class _ImagePath:
    """A :data:`PathEvaluator` for one image: gradients at baseline + alpha * (x - baseline).

    ``target`` is the image's target; unresolved (each image's top-1), the
    first evaluation must include alpha = 1 (the image itself), whose output
    resolves it. The logits at alpha = 1 are kept: they are the image's clean pass.
    """

    def __init__(self, ctx: Context, baseline: Tensor, image: Tensor, target: Target) -> None:
        self.ctx, self.baseline, self.target = ctx, baseline, target
        self.delta = image - baseline
        self.logits: Tensor | None = None

    def __call__(self, alphas: Tensor) -> tuple[Tensor, Tensor]:
        al = alphas.to(device=self.delta.device, dtype=self.delta.dtype).view(-1, 1, 1, 1)
        points = self.baseline[None] + al * self.delta[None]
        end = (alphas == 1).nonzero()
        row = int(end[0, 0]) if len(end) else None
        if self.target.needs_output:
            if row is None:
                raise ExplainzooError("internal: the first path evaluation must include alpha = 1")
            g = self.ctx.input_gradients(points, self.target, target_row=row)
            self.target = g.target
        else:
            g = self.ctx.input_gradients(points, self.target)
        if row is not None and self.logits is None:
            self.logits = g.logits[row : row + 1]
        return g.grad, g.scores


class IntegratedGradients(AttributionExplainer):
    """Integrated Gradients: the gradient integrated along a path from a baseline.

    Sundararajan, Taly & Yan, Axiomatic Attribution for Deep Networks, ICML
    2017 (https://arxiv.org/abs/1703.01365)::

        IG_i(x) = (x_i - x'_i) * int_0^1 dS_c/dx_i (x' + a (x - x')) da

    The integral uses ``steps`` gradient evaluations. Default ``rule=adaptive``
    (a deviation: the paper uses a uniform Riemann sum and suggests raising
    the step count until completeness holds within 5%) places the nodes where
    the trapezoid rule misses the measured score change (see
    :func:`adaptive_path_average`): on EfficientNet-Lite0 with a black
    baseline the score jumps within the first 5% of the path, and 64 uniform
    midpoint steps miss the total by 22% on skimage's cat (128 px) where
    adaptive nodes miss it by 0.5%. ``midpoint``, ``trapezoid`` and ``right`` (the
    paper's) are uniform rules. The baseline x' is an all-black image
    (``baseline=black``, the paper's) or the dataset mean (``mean``: zeros
    after normalisation).

    The rules with a node at alpha = 1 (adaptive, trapezoid, right) evaluate
    the image itself on the path: that pass gives the target class and the
    score, so only ``midpoint`` needs a separate clean forward pass.

    Completeness: sum_i IG_i = S_c(x) - S_c(x') up to the quadrature error.
    The signed per-pixel attributions (colour channels summed) are
    ``exp.raw`` with ``sign=signed``; :meth:`attributions` gives them per
    colour channel. The map shows ``abs`` (default), ``positive`` or
    ``signed`` (min-max scaled) values. The default is 12 steps; use 64+ for
    near-exact completeness.
    """

    description = "Integrated Gradients: gradients integrated along a path from a black image"
    paper = "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017 (arXiv:1703.01365)"
    options = {
        "steps": Option(12, "gradient evaluations along the path (64+ for near-exact completeness)",
                        low=1, high=100_000, cost="gradients"),
        "rule": Option("adaptive", "quadrature: 'adaptive' nodes, or uniform 'midpoint', 'trapezoid', 'right'",
                       choices=("adaptive", "midpoint", "trapezoid", "right")),
        "baseline": fill_option("black"),
        "sign": Option("abs", "what the map shows of the channel-summed attribution",
                       choices=("abs", "positive", "signed")),
        "batch_size": batch_option(8),
    }

    def attributions(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        """Signed (N,3,H,W) attributions, targets and the clean scores."""
        x = ctx.require_x()
        steps, rule, batch_size = self.config["steps"], self.config["rule"], self.config["batch_size"]
        # rules with a node at alpha = 1 evaluate the clean image on the path: its pass gives the
        # clean logits, so only the midpoint rule needs a separate clean forward pass
        ends_at_image = rule in ("trapezoid", "right") or (rule == "adaptive" and steps >= 3)
        target = ctx.known_target(x.shape[0]) if ends_at_image else ctx.clean().target
        spec = ctx.target_spec if target is None else target
        baseline = fill_value(ctx.backbone, self.config["baseline"], x).expand_as(x[0])
        out, logits = [], []
        for i in range(x.shape[0]):
            path = _ImagePath(ctx, baseline, x[i], spec.image(i))
            if rule == "adaptive":
                avg = adaptive_path_average(path, path.delta, steps, batch_size)
            else:
                alphas, weights = (t.flip(0) for t in path_points(steps, rule))  # alpha = 1 first
                avg = torch.zeros(path.delta.shape, dtype=torch.float64, device=x.device)
                for a, b in chunks(len(alphas), batch_size):
                    grads, _ = path(alphas[a:b])
                    avg += (grads.double() * weights[a:b].to(x.device).view(-1, 1, 1, 1)).sum(dim=0)
            if path.logits is not None:
                logits.append(path.logits)
            out.append((avg * path.delta.double()).to(x.dtype))
        if ends_at_image:
            ctx.observe_clean(torch.cat(logits))  # the alpha = 1 nodes: the clean pass, with no extra one
        clean = ctx.clean()
        return torch.stack(out), clean.targets, clean.scores

    def attribute(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        attr, targets, scores = self.attributions(ctx)
        per_pixel = attr.sum(dim=1)
        sign = self.config["sign"]
        if sign == "abs":
            per_pixel = per_pixel.abs()
        elif sign == "positive":
            per_pixel = per_pixel.clamp(min=0)
        return per_pixel, targets, scores
