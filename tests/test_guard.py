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


# -- buffers, global hooks, tensor hooks, state-dict hooks (issue 11 item 3) ---------------------


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))


def _buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.named_buffers()}


def _assert_same_buffers(net: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = dict(net.named_buffers())
    assert list(now) == list(before)
    for k, v in before.items():
        assert torch.equal(now[k], v), k


def test_train_mode_batchnorm_update_is_restored_after_success():
    net = _bn_net().eval()
    before = _buffers(net)
    with preserved_state(net):
        net.train()  # a plugin puts the model in train mode and runs it
        net(torch.randn(2, 3, 8, 8))
        assert not torch.equal(net[1].running_mean, before["1.running_mean"])
        net.eval()
    _assert_same_buffers(net, before)
    assert not net.training


def test_train_mode_batchnorm_update_is_restored_after_an_error():
    net = _bn_net().eval()
    before = _buffers(net)
    objects = [id(b) for b in net.buffers()]
    with pytest.raises(RuntimeError, match="plugin"), preserved_state(net):
        net.train()
        net(torch.randn(2, 3, 8, 8))
        net(torch.randn(2, 3, 8, 8))
        raise RuntimeError("plugin failed")
    _assert_same_buffers(net, before)
    assert [id(b) for b in net.buffers()] == objects  # the same tensors, values written back


def test_reassigned_added_and_deleted_buffers_are_put_back():
    net = _bn_net()
    before = _buffers(net)
    with preserved_state(net):
        net[1].running_var = torch.zeros(4)
        del net[4]._buffers["num_batches_tracked"]
        net[0].register_buffer("extra", torch.ones(1))
        net[1].register_buffer("extra2", torch.ones(1))
    _assert_same_buffers(net, before)


def test_buffers_changed_between_calls_are_snapshotted_again():
    net = _bn_net()
    with preserved_state(net):
        pass
    net.train()
    net(torch.randn(2, 3, 8, 8))  # the caller trains the model: its new statistics are the state
    net.eval()
    trained = _buffers(net)
    with preserved_state(net):
        net.train()
        net(torch.randn(2, 3, 8, 8))
    _assert_same_buffers(net, trained)


def test_exact_buffers_catches_a_write_that_moves_no_version_counter():
    net = _bn_net()
    before = _buffers(net)
    with preserved_state(net, exact_buffers=True):
        # the native kernel writes running statistics without bumping their counters
        torch.nn.functional.batch_norm(torch.randn(2, 4, 3, 3), net[1].running_mean, net[1].running_var,
                                       training=True)
    _assert_same_buffers(net, before)


def test_the_snapshot_does_not_keep_the_model_alive():
    import gc
    import weakref

    net = _bn_net()
    with preserved_state(net):
        pass
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_leaked_global_module_hooks_are_removed():
    import torch.nn.modules.module as torch_module

    net = _bn_net()
    seen = []
    full = torch_module._global_is_full_backward_hook
    with preserved_state(net):
        torch_module.register_module_forward_hook(lambda *a: seen.append(1))
        torch_module.register_module_forward_pre_hook(lambda *a: None)
        torch_module.register_module_full_backward_hook(lambda *a: None)
    assert hook_counts(net)["global_hooks"] == 0
    assert torch_module._global_is_full_backward_hook == full
    net(torch.randn(1, 3, 8, 8))
    assert seen == []


def test_a_tensor_hook_left_on_a_parameter_is_removed():
    net = _bn_net()
    kept = net[0].weight.register_hook(lambda g: g)  # the caller's own hook stays
    with preserved_state(net):
        net[0].weight.register_hook(lambda g: g * 0)
        net[3].bias.register_post_accumulate_grad_hook(lambda p: None)
        assert hook_counts(net)["tensor_hooks"] == 3
    assert hook_counts(net)["tensor_hooks"] == 1
    assert kept.id in net[0].weight._backward_hooks
    net(torch.randn(1, 3, 8, 8)).sum().backward()
    assert net[0].weight.grad.abs().sum() > 0
    kept.remove()


def test_state_dict_hooks_are_removed():
    net = _bn_net()
    with preserved_state(net):
        net[1].register_state_dict_pre_hook(lambda *a, **k: None)
        net._register_state_dict_hook(lambda *a, **k: None)
        net[0].register_load_state_dict_post_hook(lambda *a, **k: None)
        net[0]._register_load_state_dict_pre_hook(lambda *a, **k: None)
    counts = hook_counts(net)
    assert sum(counts.values()) == 0, counts
    assert set(net.state_dict()) == set(_bn_net().state_dict())
