"""The :class:`Context` of one explainer call and its cached passes.

A context is built by :meth:`Explainer.explain` (lock held, model in eval
mode). Its helpers run the shared mechanics of :mod:`.mechanics` and cache
what one call needs more than once:

* :meth:`Context.clean`: the scored output of the unmodified input (class
  logits for a classifier; a dense map or an embedding otherwise), the
  resolved target and its scores, computed once (or taken from a pass the
  method made anyway: the capture pass of a CAM, the input-gradient pass of
  saliency);
* :meth:`Context.layer_output`: the layer's output in its own layout, with
  the logits of the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from explainzoo.backbones import Backbone, ExplainzooError

from .mechanics import capture, check_logits, forward_logits, model_output
from .targets import Target, as_target


@dataclass(frozen=True)
class CleanPass:
    """The model on the unmodified input: its scored output (``logits``: (N,K)
    class logits for a classifier, else the dense map or embedding), the
    resolved target, its class indices (N,) (-1 where the target is no one
    class) and its scores (N,) (detached)."""

    logits: Tensor
    target: Target
    targets: Tensor
    scores: Tensor


class InputGradients(NamedTuple):
    """What :meth:`Context.input_gradients` returns: the input gradient, the
    resolved target, the scores (N,) and the logits (N,K) of the pass."""

    grad: Tensor
    target: Target
    scores: Tensor
    logits: Tensor


@dataclass
class Context:
    """Everything one call needs; helpers implement the shared mechanics."""

    backbone: Backbone
    x: Tensor | None
    target: Any
    layer: str | None
    options: dict[str, Any] = field(default_factory=dict)
    _clean: CleanPass | None = field(default=None, init=False, repr=False)
    _layer_out: Tensor | None = field(default=None, init=False, repr=False)

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    @property
    def input_hw(self) -> tuple[int, int]:
        if self.x is None:
            return self.backbone.input_size
        return int(self.x.shape[-2]), int(self.x.shape[-1])

    @property
    def target_spec(self) -> Target:
        """The call's target, unresolved."""
        return as_target(self.target)

    @property
    def clean_logits(self) -> Tensor | None:
        """The clean pass's (N,K) class logits if one ran in this call (never runs one).

        None for outputs that are no class logits (a dense (N,K,H,W) map, the
        embedding of a backbone without labels): ``Explanation.logits`` and its
        top-k stay about classes; the raw output is ``clean().logits``.
        """
        if self._clean is None:
            return None
        out = self._clean.logits
        return out if out.ndim == 2 and self.backbone.num_classes > 0 else None

    @property
    def target_description(self) -> str:
        """What the call explains, e.g. ``"tiger cat - tabby (logit contrast)"``
        (resolved when the clean pass ran: class names filled in)."""
        return (self._clean.target if self._clean is not None else self.target_spec).description

    def result_fields(self) -> dict[str, Any]:
        """The target's fields of the :class:`~.result.Explanation`: its
        description and the resolved target (both None when no clean pass ran:
        the grid methods explain no score)."""
        clean = self._clean
        return {
            "target_description": None if clean is None else clean.target.description,
            "target": None if clean is None else clean.target,
        }

    def require_x(self) -> Tensor:
        if self.x is None:
            raise ExplainzooError("this explainer needs an input image batch x")
        return self.x

    def to_map(self, out: Tensor) -> Tensor:
        """The layer's output as (N,C,h,w)."""
        return self.backbone.reshape(self._path(), out, self.input_hw)

    # -- the clean pass -----------------------------------------------------------------

    def clean(self) -> CleanPass:
        """Logits, target and scores of the unmodified input: one forward pass per call."""
        if self._clean is None:
            return self.observe_clean(forward_logits(self.backbone, self.require_x()))
        return self._clean

    def observe_clean(self, logits: Tensor) -> CleanPass:
        """Record ``logits`` of the unmodified input (from a pass made anyway).

        The first observation wins; the call's target is resolved against it.
        """
        if self._clean is None:
            logits = logits.detach()
            target = self.target_spec.resolve(self.backbone, logits)
            self._clean = CleanPass(logits, target, _indices(target, logits), target.score(logits).detach())
        return self._clean

    def targets(self, logits: Tensor) -> Tensor:
        """Class indices (N,) of the call's target against ``logits``."""
        return _indices(self.target_spec.resolve(self.backbone, logits), logits)

    def known_target(self, n: int) -> Target | None:
        """The call's target resolved without a forward pass, or None when it needs one."""
        spec = self.target_spec
        if spec.needs_output:
            return None
        return spec.resolve(self.backbone, n=n, device=self.require_x().device)

    # -- the layer ----------------------------------------------------------------------

    def layer_output(self) -> Tensor:
        """The layer's output in its own layout (tokens stay tokens), cached.

        The pass that captures it also gives the clean logits.
        """
        if self._layer_out is None:
            out, logits = capture(self.backbone, self._module(), self.require_x(), path=self._path())
            self.observe_clean(logits)  # type: ignore[arg-type]  # capture without stop returns logits
            self._layer_out = out
        return self._layer_out

    def activations(self, stop: bool = False) -> tuple[Tensor, Tensor | None]:
        """(A (N,C,h,w), logits or None): ``stop`` skips everything after the layer."""
        if not stop:
            out = self.layer_output()
            return self.to_map(out), self.clean().logits
        out, _ = capture(self.backbone, self._module(), self.require_x(), path=self._path(), stop=True)
        return self.to_map(out), None

    def activations_and_gradients(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(A, dScore/dA, targets, scores) for the layer, A and G (N,C,h,w).

        One forward pass (it is also the clean pass); backward runs from the
        target's score to the layer only.
        """
        x = self.require_x()
        out, logits = capture(self.backbone, self._module(), x, path=self._path(), grad=True)
        clean = self.observe_clean(logits)  # type: ignore[arg-type]  # capture without stop returns logits
        score = clean.target.score(logits)
        if not score.requires_grad:
            raise ExplainzooError(
                f"the target's score ({clean.target.description}) does not depend on layer {self.layer!r}"
            )
        (grad,) = torch.autograd.grad(score.sum(), out)
        return self.to_map(out.detach()), self.to_map(grad), clean.targets, clean.scores

    # -- input gradients ----------------------------------------------------------------

    def input_gradients(
        self, inputs: Tensor, target: Target | None = None, target_row: int | None = None
    ) -> InputGradients:
        """d score / d input for a batch of inputs (one forward and backward pass).

        Args:
            target: the target for these rows. Resolved: used as is. None with
                no ``target_row``: the call's target resolved against these
                logits, which are recorded as the clean pass (``inputs`` must
                be the call's input). Otherwise (None: the call's) it is one
                image's target, resolved against the logits of ``target_row``
                (the clean image among copies of it).
        """
        leaf = inputs.detach().requires_grad_(True)  # a new tensor object: the caller's keeps its flags
        with torch.enable_grad():
            logits = check_logits(model_output(self.backbone, leaf), inputs.shape[0])
            if target is None and target_row is None:
                target = self.observe_clean(logits).target
            elif target_row is not None:
                spec = self.target_spec.image(0) if target is None else target
                target = spec.resolve(self.backbone, logits[target_row : target_row + 1].detach())
            score = target.score(logits)
            (grad,) = torch.autograd.grad(score.sum(), leaf)
        return InputGradients(grad, target, score.detach(), logits.detach())

    def _path(self) -> str:
        if self.layer is None:
            raise ExplainzooError("this explainer needs a layer")
        return self.layer

    def _module(self) -> nn.Module:
        return self.backbone.module(self._path())


def _indices(target: Target, logits: Tensor) -> Tensor:
    """The (N,) classes a resolved target explains; -1 for a target that is no class."""
    if target.indices is not None:
        return target.indices
    return torch.full((logits.shape[0],), -1, dtype=torch.long, device=logits.device)
