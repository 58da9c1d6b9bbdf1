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

class _Released(threading.local):
    """Per thread: ids of handles removed through :func:`remove_hook`, guard depth."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.depth = 0


_released = _Released()

_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one re-entrant lock shared by every explanation of ``model``."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def remove_hook(handle: RemovableHandle) -> None:
    """Remove a hook registered for one call, and tell :func:`preserved_state`.

    When every hook handle created inside a guarded block was removed through
    this function, the guard skips its scan of every module's hook dicts.
    """
    handle.remove()
    if _released.depth:
        _released.ids.append(handle.id)


def _all_released(first_hook_id: int, start: int) -> bool:
    """Whether every handle created since ``first_hook_id`` was removed by :func:`remove_hook`."""
    mine = sum(1 for i in _released.ids[start:] if i >= first_hook_id)
    return mine == RemovableHandle.next_id - first_hook_id


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of hooks of each kind on ``model`` and its submodules."""
    counts = dict.fromkeys(_HOOK_DICTS, 0)
    for m in model.modules():
        for attr in _HOOK_DICTS:
            counts[attr] += len(getattr(m, attr, ()))
    return counts


def _modules_and_parameters(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """Every submodule and parameter once, like ``modules()``/``parameters()``.

    A plain walk over ``_modules``/``_parameters``: it skips the qualified
    names ``named_modules`` builds, which made up most of the guard's cost
    (0.6 of 1.0 ms on a 273-module EfficientNet).
    """
    modules = [model]
    seen = {id(model)}
    i = 0
    while i < len(modules):
        for child in modules[i]._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                modules.append(child)
        i += 1
    params: list[nn.Parameter] = []
    seen.clear()
    for m in modules:
        for p in m._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return modules, params


@contextmanager
def preserved_state(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode and restore its state afterwards.

    Restored on exit, also when the block raises: each module's ``training``
    flag, each parameter's ``requires_grad`` and ``.grad`` (values included)
    and each module's hook dicts: every hook registered inside the block is
    removed (hook handles are numbered by one global counter, so those are the
    keys at or above the counter's value on entry; the scan of every module
    is skipped when all of them were removed through :func:`remove_hook`).
    BatchNorm running statistics cannot change in eval mode.
    """
    modules, params = _modules_and_parameters(model)
    training = [m.training for m in modules]
    requires_grad = [p.requires_grad for p in params]
    grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    first_hook_id = RemovableHandle.next_id
    released_from = len(_released.ids)
    _released.depth += 1
    try:
        if eval_mode and any(training):
            model.eval()
        yield model
    finally:
        for m, flag in zip(modules, training):
            if m.training != flag:
                m.training = flag
        if not _all_released(first_hook_id, released_from):
            for m in modules:
                state = m.__dict__
                for attr in _HOOK_DICTS:
                    d = state.get(attr)
                    if d:
                        for k in [k for k in d if isinstance(k, int) and k >= first_hook_id]:
                            del d[k]
        _released.depth -= 1
        if not _released.depth:
            _released.ids.clear()
        for p, flag in zip(params, requires_grad):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for p, (grad, value) in zip(params, grads):
            if p.grad is not grad:
                p.grad = grad
            if grad is not None and value is not None and not torch.equal(grad, value):
                with torch.no_grad():
                    grad.copy_(value)
