"""Which part of a model's output is scored: one function for every explainer.

Classifiers return a logits tensor; other models return a dict (torchvision
segmentation: ``{"out": ..., "aux": ...}``), a tuple, or an object with
``.logits`` (Hugging Face ``ModelOutput``). A :class:`~.backbone.Backbone`
declares the scored part once, as its ``output_key``, and every method and
metric reads the model output through :func:`scored_output`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from .errors import ExplainzooError

#: A key of a dict output, an index of a tuple output, an attribute name, or a
#: callable ``(output) -> Tensor``; None: the tensor itself (or ``.logits``).
OutputKey = str | int | Callable[[Any], Tensor] | None


def scored_output(out: Any, key: OutputKey = None) -> Tensor:
    """The tensor that is scored, taken from a model's raw output.

    Args:
        out: what ``model(x)`` returned.
        key: the backbone's declared ``output_key``. A callable is applied to
            the output; a plain tensor output is returned as is for any other
            key; with ``None`` a non-tensor output must have ``logits`` (as an
            attribute or a dict key).

    Raises:
        ExplainzooError: the declared part is missing or is not a tensor.
    """
    if callable(key):
        value = key(out)
    elif isinstance(out, Tensor):
        return out
    elif key is None:
        value = _logits(out)
    elif isinstance(out, Mapping):
        if key not in out:
            raise ExplainzooError(
                f"model output has no key {key!r} (keys: {', '.join(map(repr, out))}); "
                "set the backbone's output_key to one of them"
            )
        value = out[key]
    elif isinstance(out, tuple | list) and isinstance(key, int):
        if not -len(out) <= key < len(out):
            raise ExplainzooError(
                f"model output has {len(out)} elements, no index {key}; set output_key to 0..{len(out) - 1}"
            )
        value = out[key]
    elif isinstance(key, str) and hasattr(out, key):
        value = getattr(out, key)
    else:
        raise ExplainzooError(
            f"cannot take {key!r} from a model output of type {type(out).__name__}; "
            "set output_key to a dict key, a tuple index, an attribute name or a callable"
        )
    if not isinstance(value, Tensor):
        raise ExplainzooError(
            f"the scored model output ({key!r}) is a {type(value).__name__}, not a tensor; "
            "set output_key to the part that holds the scores"
        )
    return value


def _logits(out: Any) -> Any:
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if logits is None:
        kind = type(out).__name__
        keys = f" with keys {', '.join(map(repr, out))}" if isinstance(out, Mapping) else ""
        raise ExplainzooError(
            f"the model returned a {kind}{keys}, not a tensor; declare which part is scored "
            "with the backbone's output_key (a dict key, tuple index, attribute or callable)"
        )
    return logits
