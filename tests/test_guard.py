"""backbones/guard.py: the state guard every explain call runs under."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explainzoo.backbones import hook_counts, preserved_state, remove_hook
from explainzoo.backbones.guard import _all_released, _modules_and_parameters, _released


def _net() -> nn.Module:
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.BatchNorm1d(4), nn.Sequential(shared, nn.ReLU()), nn.Linear(4, 2))
    net[3].weight = net[0].weight  # a tied parameter, as in weight-tied heads
    return net


def test_walk_finds_every_module_and_parameter_once():
    net = _net()
    modules, params = _modules_and_parameters(net)
    assert len(modules) == len(list(net.modules()))
    assert {id(m) for m in modules} == {id(m) for m in net.modules()}
    assert len(params) == len(list(net.parameters()))
    assert {id(p) for p in params} == {id(p) for p in net.parameters()}


def test_state_is_restored_after_an_error():
    net = _net().train()
    net[1].eval()
    net[0].bias.requires_grad_(False)
    net[3].bias.grad = torch.full((2,), 3.0)
    kept = net[1].register_forward_hook(lambda *a: None)
    before = hook_counts(net)
    flags = [m.training for m in net.modules()]
    assert False in flags and True in flags
    with pytest.raises(RuntimeError, match="boom"), preserved_state(net):
        assert not any(m.training for m in net.modules())
        net[3].bias.grad.zero_()
        net[0].weight.requires_grad_(False)
        net[2].register_forward_hook(lambda *a: None)  # a plugin forgets its hook
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == flags
    assert not net[0].bias.requires_grad and net[0].weight.requires_grad
    assert torch.equal(net[3].bias.grad, torch.full((2,), 3.0))
    assert hook_counts(net) == before and kept.id in net[1]._forward_hooks
    kept.remove()


def test_scan_is_skipped_only_when_every_new_handle_went_through_remove_hook():
    net = _net()
    with preserved_state(net):
        first = torch.utils.hooks.RemovableHandle.next_id
        start = len(_released.ids)
        remove_hook(net[0].register_forward_hook(lambda *a: None))
        assert _all_released(first, start)
        leaked = net[2].register_forward_hook(lambda *a: None)
        remove_hook(net[1].register_forward_hook(lambda *a: None))
        assert not _all_released(first, start)
    assert leaked.id not in net[2]._forward_hooks
    assert sum(hook_counts(net).values()) == 0
    assert _released.ids == [] and _released.depth == 0


def test_nested_guards_keep_the_outer_record():
    net = _net()
    with preserved_state(net):
        first = torch.utils.hooks.RemovableHandle.next_id
        with preserved_state(net):
            remove_hook(net[0].register_forward_hook(lambda *a: None))
        assert _all_released(first, 0)
        assert _released.depth == 1
    assert _released.ids == [] and _released.depth == 0
