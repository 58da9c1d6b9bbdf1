"""The contract kit: explainzoo's explainer contract, run inside a plugin's own tests.

In the style of scikit-learn's ``check_estimator`` / ``parametrize_with_checks``::

    check_explainer(MyCAM)                      # every check; raises ContractError

    @parametrize_with_checks([MyCAM, MyRISE(masks=8)])
    def test_contract(explainer, check):        # one pytest test per (explainer, check)
        check(explainer)

Checks (:data:`CHECKS`, one ``check_<name>`` function each) run on a tiny
random-init CNN with BatchNorm (:func:`make_backbone`) unless a backbone is
given, left as a user might leave it (training mode, a frozen parameter, a
``.grad``); what an explainer broke is put back after each check. A broken
rule raises :class:`ContractError` (an ``AssertionError``) naming the rule.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.modules.module as torch_module
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError, Preprocessing

from .base import Explainer
from .result import Explanation

__all__ = ["CHECKS", "Check", "ContractError", "InjectedFailure", "check_explainer", "make_backbone",
           "parametrize_with_checks"]

KINDS, COSTS = ("map", "grid"), ("passes", "gradients", "batch", "inverse", None)  # Explainer.kind, Option.cost
RTOL, ATOL = 1e-3, 2e-3  # batch vs per-image and threaded vs serial maps


class ContractError(AssertionError):
    """An explainer breaks the contract; ``failures`` maps check name -> message."""

    def __init__(self, label: str, failures: Mapping[str, str]) -> None:
        self.label, self.failures = label, dict(failures)
        parts = "; ".join(f"[{name}] {msg}" for name, msg in self.failures.items())
        super().__init__(f"{label} breaks the explainer contract: {parts}")


class InjectedFailure(Exception):
    """Raised by the kit inside the model's forward pass (``failure`` check)."""


class _Broken(Exception):
    """One broken rule inside a check (becomes a :class:`ContractError`)."""


def _require(ok: Any, rule: str, detail: str) -> None:
    if not ok:
        raise _Broken(f"rule '{rule}': {detail}")


def _tiny_cnn(width: int, num_classes: int = 10) -> nn.Sequential:
    """conv-BN-ReLU, conv(stride 2)-BN-ReLU, conv-ReLU, global pool, linear."""
    w2 = 2 * width
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, padding=1), bn1=nn.BatchNorm2d(width), relu1=nn.ReLU(),
        conv2=nn.Conv2d(width, w2, 3, stride=2, padding=1), bn2=nn.BatchNorm2d(w2), relu2=nn.ReLU(),
        conv3=nn.Conv2d(w2, w2, 3, padding=1), relu3=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(w2, num_classes),
    ))


def make_backbone(seed: int = 0, width: int = 8, size: int = 32) -> Backbone:
    """A tiny random-init CNN :class:`Backbone` (aliases conv1, stage1, stage2, last).

    Deterministic for a seed (the global RNG is left alone); BatchNorm statistics
    are non-trivial, so a forward pass in training mode changes them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _tiny_cnn(width)
        with torch.no_grad():
            for bn in (model.bn1, model.bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
    aliases = {"conv1": "conv1", "stage1": "relu1", "stage2": "relu2", "last": "relu3"}
    return Backbone(f"kit:tinycnn{width}", model.eval(), Preprocessing(input_size=(size, size)),
                    [f"class_{i}" for i in range(10)], aliases=aliases)


def _inputs(bb: Backbone, n: int, seed: int) -> Tensor:
    x = torch.randn(n, 3, *bb.input_size, generator=torch.Generator().manual_seed(seed))
    param = next(bb.model.parameters(), None)
    return x if param is None else x.to(param.device)


# hook dicts; the "*_with_kwargs"/"*_always_called" ones are bookkeeping keyed like the hooks
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                 "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_forward_hooks_with_kwargs",
                 "_global_forward_hooks_always_called")
_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def _hook_dicts(model: nn.Module) -> dict[str, dict]:
    """Every hook dict that can hold a hook of this model (module, global, tensor): label -> dict."""
    owners: list[tuple[str, Any, tuple[str, ...]]] = [
        (f"module '{p or '<model>'}'", m, _MODULE_HOOKS) for p, m in model.named_modules()]
    owners.append(("torch (global)", torch_module, _GLOBAL_HOOKS))
    owners += [(f"tensor '{n}'", t, _TENSOR_HOOKS) for n, t in [*model.named_parameters(), *model.named_buffers()]]
    out: dict[str, dict] = {}
    for label, owner, attrs in owners:
        for attr in attrs:
            d = getattr(owner, attr, None)
            if isinstance(d, dict):
                out[f"{attr.strip('_')} of {label}"] = d
    return out


@dataclass
class _State:
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, Tensor | None]
    buffers: dict[str, Tensor]
    hooks: dict[str, frozenset]


def _snapshot(model: nn.Module) -> _State:
    params = dict(model.named_parameters())
    return _State(
        training={p or "<model>": m.training for p, m in model.named_modules()},
        requires_grad={k: p.requires_grad for k, p in params.items()},
        grads={k: None if p.grad is None else p.grad.detach().clone() for k, p in params.items()},
        buffers={k: b.detach().clone() for k, b in model.named_buffers()},
        hooks={k: frozenset(d) for k, d in _hook_dicts(model).items()},
    )


def _state_changes(before: _State, model: nn.Module, state: bool = True, hooks: bool = True) -> None:
    """Raise :class:`_Broken` naming the first rule the model's current state breaks."""
    after = _snapshot(model)
    rules = [("training flags unchanged", "training"), ("requires_grad unchanged", "requires_grad"),
             ("no parameter .grad written", "grads"), ("buffers unchanged (BatchNorm statistics)", "buffers")]
    for rule, field in rules if state else ():
        old, new = getattr(before, field), getattr(after, field)
        changed = [k for k, v in old.items() if not _same(v, new.get(k))]
        _require(not changed, rule, f"changed on {len(changed)} of {len(old)}: {changed[:4]}")
    if hooks:
        left = [f"{len(keys - before.hooks.get(k, frozenset()))} {k}" for k, keys in after.hooks.items()
                if "with_kwargs" not in k and "always_called" not in k and keys - before.hooks.get(k, frozenset())]
        _require(not left, "no hooks left", f"left behind: {', '.join(left[:4])}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    return a is b or (not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b)


def _restore(model: nn.Module, state: _State) -> None:
    """Put back what an explainer changed (so one failing check never spoils the next)."""
    modules = dict(model.named_modules())
    for path, flag in state.training.items():
        modules["" if path == "<model>" else path].training = flag
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.requires_grad_(state.requires_grad[k])
            p.grad = None if state.grads[k] is None else state.grads[k].clone()
        for k, b in model.named_buffers():
            if k in state.buffers and not _same(b, state.buffers[k]):
                b.copy_(state.buffers[k])
    for label, d in _hook_dicts(model).items():
        for key in [key for key in d if key not in state.hooks.get(label, frozenset())]:
            del d[key]


def _mixed_mode(model: nn.Module) -> None:
    """Leave the model as a user might: training on, first parameter frozen, last one with a .grad."""
    model.train()
    params = list(model.parameters())
    if params:
        params[0].requires_grad_(False)
        params[-1].grad = torch.full_like(params[-1], 0.25)


def _label(explainer: Explainer | type[Explainer]) -> str:
    return explainer.__name__ if isinstance(explainer, type) else explainer.name or type(explainer).__name__


def _payload(exp: Explanation) -> Tensor | None:
    return exp.maps if exp.kind == "map" else exp.grid


def _close(a: Tensor | None, b: Tensor | None) -> bool:
    ok = a is not None and b is not None and a.shape == b.shape
    return ok and bool(torch.allclose(a.float(), b.float(), rtol=RTOL, atol=ATOL))


def _max_diff(a: Tensor | None, b: Tensor | None) -> str:
    if a is not None and b is not None and a.shape == b.shape:
        return f"max difference {float((a.float() - b.float()).abs().max()):.3g}"
    return f"shapes {getattr(a, 'shape', None)} vs {getattr(b, 'shape', None)}"


def check_metadata(explainer: Explainer, bb: Backbone) -> None:
    """kind, description (one line), paper and a docstring are present."""
    cls = type(explainer)
    kind = getattr(cls, "kind", None)
    if hasattr(Explainer, "kind"):
        _require(kind in KINDS, "kind declared", f"{cls.__name__}.kind is {kind!r}, expected one of {KINDS}")
    desc = getattr(cls, "description", "")
    _require(isinstance(desc, str) and desc.strip() and len(desc.splitlines()) == 1, "description present",
             f"{cls.__name__}.description must be one non-empty line, got {desc!r}")
    paper = getattr(cls, "paper", "")
    _require(isinstance(paper, str) and paper.strip(), "paper present", f"{cls.__name__}.paper is empty")
    _require((cls.__doc__ or "").strip(), "docstring present", f"{cls.__name__} has no docstring")
    if kind in KINDS:
        exp = explainer.explain(bb, _inputs(bb, 1, 5))
        _require(exp.kind == kind, "kind declared", f"declared {kind!r} but returned a {exp.kind!r} result")


def _beyond(opt: Any) -> list[Any]:
    """Values an option must refuse: past its bounds, outside its choices, of the wrong type."""
    d, out = opt.default, []
    if isinstance(d, int | float) and not isinstance(d, bool):
        step = (lambda v: 1) if isinstance(d, int) else (lambda v: max(abs(v) * 1e-3, 1e-3))
        out += [opt.low - step(opt.low)] if opt.low is not None else []
        out += [opt.high + step(opt.high)] if opt.high is not None else []
        if opt.choices and all(isinstance(c, int | float) for c in opt.choices):
            out.append(max(opt.choices) + 1)
    if opt.choices and isinstance(d, str):
        out.append("__not_a_choice__")
    return out + (["not-a-value"] if d is not None and not isinstance(d, str) else [])


def _refused(cls: type[Explainer], options: dict[str, Any]) -> str | None:
    """None when ``cls(**options)`` raises an ExplainzooError, else what happened."""
    try:
        cls(**options)
    except ExplainzooError:
        return None
    except Exception as exc:  # noqa: BLE001 - any other error breaks the rule
        return f"raised {type(exc).__name__}, not an ExplainzooError"
    return "was accepted"


def check_options(explainer: Explainer, bb: Backbone) -> None:
    """Defaults are valid; values beyond low/high/choices and unknown names are refused."""
    cls, base = type(explainer), dict(getattr(explainer, "config", {}))
    why = _refused(cls, {})
    _require(why == "was accepted", "defaults valid", f"{cls.__name__}() {why or 'raised'}")
    for name, opt in cls.options.items():
        _require(getattr(opt, "doc", ""), "options documented", f"option {name!r} has no doc")
        cost = getattr(opt, "cost", None)
        _require(cost in COSTS, "option cost declared", f"option {name!r} cost {cost!r} not in {COSTS}")
        d = opt.default
        ok = (opt.low is None or d >= opt.low) and (opt.high is None or d <= opt.high)
        _require(ok and (opt.choices is None or d in opt.choices) and opt.coerce(name, d) == d,
                 "defaults valid", f"default {name}={d!r} is outside its own bounds")
        for edge in (opt.low, opt.high) if isinstance(d, int | float) and not isinstance(d, bool) else ():
            if edge is not None:
                why = _refused(cls, {**base, name: type(d)(edge)}) or "is refused"
                _require(why == "was accepted", "option bounds", f"the bound {name}={edge!r} {why}")
        for bad in _beyond(opt):
            why = _refused(cls, {**base, name: bad})
            _require(why is None, "option bounds", f"{name}={bad!r} is beyond its bounds and {why}")
    why = _refused(cls, {**base, "__no_such_option__": 1})
    _require(why is None, "option bounds", f"an unknown option name {why}")


def check_output(explainer: Explainer, bb: Backbone) -> None:
    """Maps (N,H,W) aligned with x (or an (N,C,GH,GW) grid), float32, finite, in [0,1]."""
    x = _inputs(bb, 2, 1)
    exp = explainer.explain(bb, x)
    _require(isinstance(exp, Explanation), "returns an Explanation", f"got {type(exp).__name__}")
    out = _payload(exp)
    if out is None or exp.kind not in KINDS:
        raise _Broken("rule 'result shapes': neither maps nor grid filled")
    _require(len(exp) == 2, "result shapes", f"len(explanation) is {len(exp)} for 2 images")
    if exp.kind == "map":
        want = (x.shape[0], *x.shape[-2:])
        _require(tuple(out.shape) == want, "result shapes", f"maps {tuple(out.shape)}, expected {want}")
        for field in ("targets", "scores"):
            t = getattr(exp, field)
            _require(t is not None and tuple(t.shape) == (2,), "result shapes", f"{field} must be (N,)")
    else:
        _require(out.ndim == 4 and out.shape[0] == 2 and out.shape[1] in (1, 3), "result shapes",
                 f"grid {tuple(out.shape)}, expected (N,C,GH,GW) with C 1 or 3")
    _require(out.dtype == torch.float32, "float32", f"{exp.kind} dtype is {out.dtype}")
    _require(bool(torch.isfinite(out).all()), "finite", f"{int((~torch.isfinite(out)).sum())} NaN/inf values")
    lo, hi = float(out.min()), float(out.max())
    _require(lo >= 0 and hi <= 1, "range [0,1]", f"values in [{lo:.3g}, {hi:.3g}]")


def check_batch(explainer: Explainer, bb: Backbone) -> None:
    """``explain(batch)[i]`` equals ``explain(x_i)`` within tolerance."""
    x = _inputs(bb, 2, 2)
    batch = explainer.explain(bb, x)
    for i in range(x.shape[0]):
        single = explainer.explain(bb, x[i : i + 1])
        a, b = _payload(batch[i]), _payload(single)
        _require(_close(a, b), "batch = per image", f"image {i}: {_max_diff(a, b)}")
        if batch.targets is not None and single.targets is not None:
            _require(torch.equal(batch.targets[i : i + 1].cpu(), single.targets.cpu()),
                     "batch = per image", f"image {i}: another target in the batch")


def check_state(explainer: Explainer, bb: Backbone) -> None:
    """training flags, requires_grad, .grad and buffers are as before a successful call."""
    before = _snapshot(bb.model)
    explainer.explain(bb, _inputs(bb, 2, 3))
    _state_changes(before, bb.model, hooks=False)


def check_hooks(explainer: Explainer, bb: Backbone) -> None:
    """No module, global or tensor hook is left after a call."""
    before = _snapshot(bb.model)
    explainer.explain(bb, _inputs(bb, 1, 3))
    _state_changes(before, bb.model, state=False)


def check_failure(explainer: Explainer, bb: Backbone) -> None:
    """After a failure injected in the 1st or 2nd forward pass the model is as before."""
    # the stem conv (a plain walk, so a backbone without the alias works too): it runs in every pass
    target = next((m for m in bb.model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), bb.model)
    for nth in (1, 2):
        calls = [0]

        def boom(module: nn.Module, args: Any, out: Any, nth: int = nth, calls: list = calls) -> None:
            calls[0] += 1
            if calls[0] == nth:
                raise InjectedFailure(f"injected failure in forward pass {nth}")

        handle = target.register_forward_hook(boom)
        try:
            before = _snapshot(bb.model)
            try:
                explainer.explain(bb, _inputs(bb, 1, 4))
                _require(calls[0] < nth, "errors propagate", f"the failure injected in pass {nth} was swallowed")
            except _Broken:
                raise
            except Exception:  # noqa: BLE001 - the injected failure, maybe wrapped
                if calls[0] < nth:  # not the injected failure: a real error
                    raise
            _state_changes(before, bb.model)
        finally:
            handle.remove()


def check_threads(explainer: Explainer, bb: Backbone) -> None:
    """Two threads explaining on one shared backbone give the serial maps."""
    xs = [_inputs(bb, 1, 10), _inputs(bb, 1, 11)]
    serial = [_payload(explainer.explain(bb, x)) for x in xs]
    barrier = threading.Barrier(2)

    def work(i: int) -> list[Tensor | None]:
        mine = copy.copy(explainer)  # one instance per thread, one shared backbone
        barrier.wait(timeout=30)
        return [_payload(mine.explain(bb, xs[i])) for _ in range(2)]

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(work, i) for i in range(2)]
    for i, fut in enumerate(futures):
        try:
            got = fut.result(timeout=120)
        except Exception as exc:  # noqa: BLE001 - reported as the broken rule
            raise _Broken(f"rule 'thread safety': thread {i} raised {type(exc).__name__}: {exc}") from None
        for r in got:
            _require(_close(r, serial[i]), "thread safety", f"thread {i}: {_max_diff(r, serial[i])} vs serial")


def check_layer(explainer: Explainer, bb: Backbone) -> None:
    """Layer methods: ``.layer`` is the resolved path and another layer gives another map."""
    cls = type(explainer)
    if not cls.uses_layer:
        return
    x = _inputs(bb, 1, 6)
    default = bb.resolve_layer(cls.default_layer)
    exp = explainer.explain(bb, x)
    _require(exp.layer == default, "layer honoured", f"result .layer {exp.layer!r}, resolved {default!r}")
    tried = []
    others = [p for p in dict.fromkeys([*bb.layers.values(), *bb.map_layers()]) if p != default]
    for path in others[:8]:
        try:
            other = explainer.explain(bb, x, layer=path)
        except ExplainzooError:
            continue
        _require(other.layer == path, "layer honoured", f"layer={path!r} gave .layer {other.layer!r}")
        if not _close(_payload(other), _payload(exp)):
            return
        tried.append(path)
    _require(False, "layer honoured", f"layers {tried} give the same map as {default!r}: the layer is ignored"
             if tried else f"no layer other than {default!r} was accepted")


@dataclass(frozen=True)
class Check:
    """One named check, callable on an explainer (class or instance)."""

    name: str
    fn: Callable[[Explainer, Backbone], None]
    backbone: Backbone | Callable[[], Backbone] | None = None
    options: Mapping[str, Any] | None = None

    def __call__(self, explainer: Explainer | type[Explainer]) -> None:
        failure = _run_check(self, _instance(explainer, self.options), self.backbone)
        if failure is not None:
            raise ContractError(_label(explainer), {self.name: failure})


CHECKS: tuple[Check, ...] = tuple(Check(fn.__name__[len("check_"):], fn) for fn in (
    check_metadata, check_options, check_output, check_batch, check_state, check_hooks,
    check_failure, check_threads, check_layer,
))


def _instance(explainer: Explainer | type[Explainer], options: Mapping[str, Any] | None) -> Explainer:
    """A new instance of a class, or a copy of an instance with ``options`` over its own."""
    if isinstance(explainer, type):
        return explainer(**dict(options or {}))
    if not options:
        return explainer
    inst = copy.copy(explainer)
    inst.__init__(**{**explainer.config, **options})  # validated like any construction
    return inst


def _run_check(check: Check, explainer: Explainer, backbone: Any) -> str | None:
    """Run one check; the broken rule's message, or None when it passes."""
    bb = backbone() if callable(backbone) and not isinstance(backbone, Backbone) else backbone
    bb = bb if bb is not None else make_backbone()
    pristine = _snapshot(bb.model)
    try:
        _mixed_mode(bb.model)
        check.fn(explainer, bb)
    except _Broken as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a crash breaks the contract too
        first = (str(exc).splitlines() or [""])[0]
        return f"rule 'runs without error': raised {type(exc).__name__}: {first}"
    finally:
        _restore(bb.model, pristine)
    return None


def check_explainer(
    explainer: Explainer | type[Explainer],
    backbone: Backbone | Callable[[], Backbone] | None = None,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Run every check of :data:`CHECKS` on ``explainer``.

    Args:
        explainer: an :class:`Explainer` subclass or an instance (its options are kept).
        backbone: a :class:`Backbone`, or a callable returning one; None: :func:`make_backbone`.
        options: explainer options for the checks (small ``steps``/``samples`` keep them fast).

    Raises:
        ContractError: naming every broken check and rule, on one line.
    """
    inst = _instance(explainer, options)  # invalid options are the caller's error, raised as such
    failures = {c.name: msg for c in CHECKS if (msg := _run_check(c, inst, backbone))}
    if failures:
        raise ContractError(_label(explainer), failures)


def parametrize_with_checks(
    explainers: Iterable[Explainer | type[Explainer]],
    backbone: Backbone | Callable[[], Backbone] | None = None,
    options: Mapping[Any, Mapping[str, Any]] | None = None,
) -> Any:
    """A ``pytest.mark.parametrize("explainer, check", ...)`` decorator: one test per pair.

    The test calls ``check(explainer)``; ids read ``<explainer>-<check>``.

    Args:
        explainers: classes or instances.
        backbone: as in :func:`check_explainer` (a callable is built per check, at test time).
        options: per explainer, keyed by class, class name or registry name: options for the checks.
    """
    import pytest

    params, ids = [], []
    for spec in explainers:
        label = _label(spec)
        cls = spec if isinstance(spec, type) else type(spec)
        opts = next((options[k] for k in (label, cls.__name__, cls) if options and k in options), None)
        for check in CHECKS:
            if check.name == "layer" and not cls.uses_layer:
                continue
            params.append((spec, Check(check.name, check.fn, backbone, opts)))
            ids.append(f"{label}-{check.name}")
    return pytest.mark.parametrize("explainer, check", params, ids=ids)
