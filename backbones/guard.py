"""Leave the caller's model exactly as it was.

:func:`preserved_state` puts a model in eval mode for the duration of a call
and restores, in ``finally``, every module's ``training`` flag, every
parameter's ``requires_grad`` and ``.grad`` and every module's hook dicts, so
an explainer that raises half way (or a buggy plugin that forgets a hook)
cannot leave the model changed. :func:`model_lock` gives the per-model lock
that serialises explanations sharing one model across threads.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)

_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one re-entrant lock shared by every explanation of ``model``."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of hooks of each kind on ``model`` and its submodules."""
    counts = dict.fromkeys(_HOOK_DICTS, 0)
    for m in model.modules():
        for attr in _HOOK_DICTS:
            counts[attr] += len(getattr(m, attr, ()))
    return counts


@contextmanager
def preserved_state(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode and restore its state afterwards.

    Restored on exit, also when the block raises: each module's ``training``
    flag, each parameter's ``requires_grad`` and ``.grad`` (values included)
    and each module's hook dicts: every hook registered inside the block is
    removed (hook handles are numbered by one global counter, so those are the
    keys at or above the counter's value on entry). BatchNorm running
    statistics cannot change in eval mode.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    first_hook_id = RemovableHandle.next_id
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    try:
        if eval_mode and any(training):
            model.eval()
        yield model
    finally:
        for m, flag in zip(modules, training):
            if m.training != flag:
                m.training = flag
        for m in modules:
            state = m.__dict__
            for attr in _HOOK_DICTS:
                d = state.get(attr)
                if d:
                    for k in [k for k in d if isinstance(k, int) and k >= first_hook_id]:
                        del d[k]
        for p, flag in zip(params, requires_grad):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for p, (grad, value) in zip(params, grads):
            if p.grad is not grad:
                p.grad = grad
            if grad is not None and value is not None and not torch.equal(grad, value):
                with torch.no_grad():
                    grad.copy_(value)
