"""Leave the caller's model exactly as it was.

:func:`preserved_state` puts a model in eval mode for the duration of a call
and restores, in ``finally`` (also when the block raised):

* every module's ``training`` flag, every parameter's ``requires_grad`` and
  ``.grad`` (values included);
* every buffer (BatchNorm running statistics, ``num_batches_tracked``, any
  other): a buffer reassigned, deleted or added is put back or removed, and a
  buffer changed in place gets its values back (see below);
* every hook registered inside the block: module hooks (forward, backward,
  state-dict and load-state-dict hooks), tensor hooks on parameters, and the
  global module hooks of ``torch.nn.modules.module``
  (``register_module_forward_hook`` & co.).

Buffers are restored from a snapshot cloned once per model and kept while the
buffers are unchanged, so a call costs a walk over version counters, not a
copy. A buffer counts as changed in place when its ``_version`` counter moved
or another buffer of the same module moved: BatchNorm's native kernel writes
the running statistics without bumping their counters, but a train-mode
forward always increments ``num_batches_tracked``, so the whole module is
restored. A buffer written by a native kernel with no counter moving in its
module (e.g. a plugin calling ``F.batch_norm(training=True)`` on a model's
buffers) is only caught with ``exact_buffers=True``, which compares values.

:func:`model_lock` gives the per-model lock that serialises explanations
sharing one model across threads.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.modules.module as torch_module
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
#: Hook dicts of a tensor (the parameters' ``register_hook`` & co.).
_TENSOR_HOOK_DICTS = ("_backward_hooks", "_post_accumulate_grad_hooks")
#: The global hook dicts of ``torch.nn.modules.module``, keyed by handle id.
_GLOBAL_HOOK_DICTS = tuple(
    n for n in dir(torch_module) if n.startswith("_global_") and n.endswith("_hooks")
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
    """Number of hooks of each kind on ``model``, its submodules and parameters.

    Module hook dicts are counted by their attribute name; ``tensor_hooks``
    counts hooks on parameters, ``global_hooks`` torch's global module hooks.
    """
    counts = dict.fromkeys(_HOOK_DICTS, 0)
    for m in model.modules():
        for attr in _HOOK_DICTS:
            counts[attr] += len(getattr(m, attr, ()))
    counts["tensor_hooks"] = sum(
        len(getattr(p, attr, None) or ()) for p in model.parameters() for attr in _TENSOR_HOOK_DICTS
    )
    counts["global_hooks"] = sum(len(getattr(torch_module, n)) for n in _GLOBAL_HOOK_DICTS)
    return counts


def _modules_and_parameters(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """Every submodule and parameter once, like ``modules()``/``parameters()``.

    A plain walk over ``_modules``/``_parameters``: it skips the qualified
    names ``named_modules`` builds, which are most of the guard's cost on a
    model with hundreds of modules.
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


def _versions(bufs: list[Tensor]) -> list[int | None]:
    """The version counters of ``bufs`` (None for inference tensors, which keep none)."""
    try:
        return [b._version for b in bufs]
    except RuntimeError:
        return [None if b.is_inference() else b._version for b in bufs]


def _owners(modules: list[nn.Module]) -> list[nn.Module]:
    return [m for m in modules if m._buffers]


def _flat(owners: list[nn.Module]) -> list[Tensor]:
    return [b for m in owners for b in m._buffers.values() if b is not None]


class _Buffers:
    """The buffers of a model's modules: objects, version counters, a value snapshot."""

    def __init__(self, modules: list[nn.Module]) -> None:
        owners = _owners(modules)
        # weak references: the cache is keyed weakly by the model, which must not be kept alive
        self.refs = [weakref.ref(m) for m in owners]
        self.rows = [dict(m._buffers) for m in owners]
        self.flat = _flat(owners)
        self.versions = _versions(self.flat)
        self.values = {id(b): b.detach().clone() for b in self.flat}

    def unchanged(self, modules: list[nn.Module], exact: bool = False) -> bool:
        """Whether ``modules`` hold exactly the snapshotted buffers, none changed in place."""
        owners = _owners(modules)
        if len(owners) != len(self.refs) or any(m is not r() for m, r in zip(owners, self.refs)):
            return False
        flat = _flat(owners)
        if len(flat) != len(self.flat) or not all(map(operator.is_, flat, self.flat)):
            return False
        versions = self.versions
        if None in versions or _versions(flat) != versions:
            return False
        return not exact or all(torch.equal(b, self.values[id(b)]) for b in flat)

    def restore(self, modules: list[nn.Module], exact: bool) -> None:
        """Put every module's buffers back: objects, names and values.

        A module whose buffers all kept their objects and version counters is
        left alone; any other gets all of its buffers back (see the module
        docstring: BatchNorm moves only ``num_batches_tracked``'s counter).
        """
        if self.unchanged(modules, exact):
            return
        for m in _owners(modules):
            if all(m is not r() for r in self.refs):
                m._buffers.clear()  # buffers added to a module that had none
        now = _versions(self.flat)
        moved = {id(b) for b, v, old in zip(self.flat, now, self.versions) if v is None or v != old}
        for ref, row in zip(self.refs, self.rows):
            m = ref()
            if m is not None and self._dirty(m, row, moved, exact):
                m._buffers.clear()
                m._buffers.update(row)
                with torch.no_grad():
                    for b in row.values():
                        if b is not None and not b.is_inference():
                            b.copy_(self.values[id(b)])
        self.versions = _versions(self.flat)

    def _dirty(self, m: nn.Module, row: dict[str, Tensor | None], moved: set[int], exact: bool) -> bool:
        bufs = m._buffers
        if len(bufs) != len(row) or any(bufs.get(k, self) is not b for k, b in row.items()):
            return True
        if any(id(b) in moved for b in row.values()):
            return True
        return exact and any(b is not None and not torch.equal(b, self.values[id(b)]) for b in row.values())


_snapshots: weakref.WeakKeyDictionary[nn.Module, _Buffers] = weakref.WeakKeyDictionary()


def _buffer_snapshot(model: nn.Module, modules: list[nn.Module]) -> _Buffers:
    """The model's cached buffer snapshot, taken again when the buffers changed since."""
    snap = _snapshots.get(model)
    if snap is None or not snap.unchanged(modules):
        snap = _snapshots[model] = _Buffers(modules)
    return snap


def _drop_new(d: object, first_hook_id: int) -> None:
    """Delete the handles numbered ``first_hook_id`` or later from a hook dict."""
    if d:
        for k in [k for k in d if isinstance(k, int) and k >= first_hook_id]:
            del d[k]


def _remove_new_hooks(modules: list[nn.Module], params: list[nn.Parameter], first_hook_id: int) -> None:
    """Remove every module and parameter hook registered since ``first_hook_id``."""
    for m in modules:
        state = m.__dict__
        for attr in _HOOK_DICTS:
            _drop_new(state.get(attr), first_hook_id)
    for p in params:
        for attr in _TENSOR_HOOK_DICTS:
            _drop_new(getattr(p, attr, None), first_hook_id)


def _remove_new_global_hooks(first_hook_id: int, full_backward: bool | None) -> None:
    """Remove global module hooks registered since ``first_hook_id`` (any thread's)."""
    for name in _GLOBAL_HOOK_DICTS:
        _drop_new(getattr(torch_module, name), first_hook_id)
    if not torch_module._global_backward_hooks:
        torch_module._global_is_full_backward_hook = full_backward


@contextmanager
def preserved_state(model: nn.Module, eval_mode: bool = True, exact_buffers: bool = False) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode and restore its state afterwards.

    Restored on exit, also when the block raises: what the module docstring
    lists. Hooks registered inside the block are found by their handle number
    (one global counter numbers every hook handle, so those are the keys at or
    above the counter's value on entry); the scan of every module and
    parameter is skipped when all of them were removed through
    :func:`remove_hook`.

    Args:
        model: the model to guard.
        eval_mode: put the model in eval mode for the block.
        exact_buffers: also compare every buffer's values on exit (a copy's
            cost), catching writes that move no version counter.
    """
    modules, params = _modules_and_parameters(model)
    training = [m.training for m in modules]
    requires_grad = [p.requires_grad for p in params]
    grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    buffers = _buffer_snapshot(model, modules)
    full_backward = torch_module._global_is_full_backward_hook
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
        buffers.restore(modules, exact_buffers)
        if not _all_released(first_hook_id, released_from):
            _remove_new_hooks(modules, params, first_hook_id)
            _remove_new_global_hooks(first_hook_id, full_backward)
        _released.depth -= 1
        if not _released.depth:
            _released.ids.clear()
        _restore_parameters(params, requires_grad, grads)


def _restore_parameters(params: list[nn.Parameter], requires_grad: list[bool], grads: list) -> None:
    for p, flag in zip(params, requires_grad):
        if p.requires_grad != flag:
            p.requires_grad_(flag)
    for p, (grad, value) in zip(params, grads):
        if p.grad is not grad:
            p.grad = grad
        if grad is not None and value is not None and not torch.equal(grad, value):
            with torch.no_grad():
                grad.copy_(value)
