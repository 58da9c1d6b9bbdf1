"""One way to build a backbone, as timm's ``build_model_with_cfg``.

Every family hands :func:`build_backbone` a model constructor and what it knows
(preprocessing, labels, layer hints, its hub loader); the builder resolves the
weights in one order for all of them and records where they came from:

1. an explicit ``checkpoint`` (safetensors, or ``torch.load`` with
   ``weights_only=True``: no pickled code ever runs) wins;
2. with ``pretrained=True``, a registered offline weight package
   (:data:`~.weights.OFFLINE_PACKAGES`);
3. then the family's hub loader (timm's hub honours ``HF_HUB_OFFLINE`` and the
   local cache);
4. without ``pretrained``: random init.

Asking for pretrained weights that cannot be found is a
:class:`~.errors.WeightsUnavailableError`, never a silent random init (the
fallback with a loud warning is :func:`~.zoo.load_backbone`'s, for apps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from torch import Tensor, nn

from .backbone import Backbone
from .errors import ExplainzooError, WeightsUnavailableError
from .layers import LayerHints
from .outputs import OutputKey
from .preprocess import Preprocessing
from .weights import OFFLINE_PACKAGES, load_checkpoint, load_state_dict_checked, offline_state_dict

T = TypeVar("T")
#: A value, or a function of the built model that gives it.
FromModel = T | Callable[[nn.Module], T]
#: ``fit(model, state_dict, source) -> provenance``: loads a checkpoint's tensors.
CheckpointFitter = Callable[[nn.Module, Mapping[str, Tensor], str], str]

RANDOM_INIT = "random init"


@dataclass(frozen=True)
class Hub:
    """A family's loader of published weights.

    Attributes:
        load: builds the model with its published weights (may download).
        provenance: ``(model) -> str`` for the ``weights`` field, e.g.
            ``"timm hub (timm/resnet18.a1_in1k)"``.
        hint: how to make the weights reachable, appended to the error.
    """

    load: Callable[[], nn.Module]
    provenance: Callable[[nn.Module], str]
    hint: str = "pass checkpoint=PATH, or use pretrained=False for random init."


def fit_state_dict(model: nn.Module, sd: Mapping[str, Tensor], source: str) -> str:
    """The default checkpoint fitter: every key, every shape (strict)."""
    load_state_dict_checked(model, sd, source)
    return source


def build_backbone(
    name: str,
    model: Callable[[], nn.Module],
    *,
    preprocessing: FromModel[Preprocessing],
    labels: FromModel[Sequence[str]],
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    offline: str | None = None,
    hub: Hub | None = None,
    layer_hints: FromModel[LayerHints | None] = None,
    aliases: Mapping[str, str] | None = None,
    output_key: OutputKey = None,
    fit_checkpoint: CheckpointFitter = fit_state_dict,
    no_weights: str | None = None,
    kind: str | None = None,
) -> Backbone:
    """Build a :class:`Backbone` with its weights resolved in the one documented order.

    Args:
        name: the registry name, e.g. ``"timm:resnet18"``.
        model: builds the model with random init (used for the checkpoint,
            offline and random-init cases).
        preprocessing: the model's input pipeline, or ``(model) -> it``.
        labels: class names, or ``(model) -> them``.
        pretrained: load published weights: the offline package, else ``hub``.
        checkpoint: a state-dict file; wins over ``pretrained``.
        offline: the key to look up in the offline weight packages (the
            family's model name); None: the family has none.
        hub: the family's published-weights loader; None: it has none.
        layer_hints: the family's :class:`LayerHints`, or ``(model) -> them``.
        aliases: fixed alias -> module path (instead of derived ones).
        output_key: which part of the model output is scored (see
            :func:`~.outputs.scored_output`).
        fit_checkpoint: loads a checkpoint's state dict into the model and
            returns the provenance text (e.g. to map another layout's keys).
        no_weights: the error text when ``pretrained`` finds no source.
        kind: what the model outputs (see :attr:`Backbone.kind`); None:
            "classifier", or "embedding" when there are no labels.

    Raises:
        WeightsUnavailableError: pretrained weights asked for but not reachable,
            or a checkpoint that cannot be read or does not fit.
    """
    has_offline = offline is not None and offline in OFFLINE_PACKAGES
    if pretrained and checkpoint is None and not has_offline and hub is None:
        raise WeightsUnavailableError(
            no_weights or f"{name} has no published weights: pass checkpoint=PATH, "
            "or pretrained=False for random init."
        )
    net, weights = _weighted_model(name, model, pretrained, checkpoint, offline if has_offline else None,
                                   hub, fit_checkpoint)
    net.eval()
    return Backbone(
        name=name,
        model=net,
        preprocessing=_value(preprocessing, net, Preprocessing),
        labels=list(_value(labels, net, Sequence)),
        weights=weights,
        pretrained=weights != RANDOM_INIT,
        aliases=dict(aliases) if aliases is not None else None,
        hints=_value(layer_hints, net, LayerHints),
        output_key=output_key,
        kind=kind,
    )


def _weighted_model(
    name: str,
    model: Callable[[], nn.Module],
    pretrained: bool,
    checkpoint: str | Path | None,
    offline: str | None,
    hub: Hub | None,
    fit_checkpoint: CheckpointFitter,
) -> tuple[nn.Module, str]:
    """The model and its provenance, by the order in the module docstring."""
    if checkpoint is not None:
        net = model()
        return net, fit_checkpoint(net, load_checkpoint(checkpoint), f"checkpoint {checkpoint}")
    if not pretrained:
        return model(), RANDOM_INIT
    if offline is not None:
        net = model()
        found = offline_state_dict(offline, net)
        if found is None:  # registered: checked by the caller
            raise WeightsUnavailableError(f"no offline weight package registered for {offline}")
        load_state_dict_checked(net, *found)
        return net, found[1]
    if hub is None:
        raise WeightsUnavailableError(f"{name} has no published weights: pass checkpoint=PATH")
    try:
        net = hub.load()
    except ExplainzooError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise WeightsUnavailableError(
            f"no pretrained weights reachable for {name} ({type(exc).__name__}: {first}). {hub.hint}"
        ) from exc
    return net, hub.provenance(net)


def _value(v: FromModel[T], model: nn.Module, kind: type) -> T:
    """``v`` itself when it is a ``kind`` (or None), else ``v(model)``."""
    return v if v is None or isinstance(v, kind) else v(model)
