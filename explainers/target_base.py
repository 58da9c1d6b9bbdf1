"""The :class:`Target` base class and the targets that need no class labels.

:mod:`explainzoo.explainers.targets` is the public module (``targets as T``);
this one holds what it builds on: :class:`Target` (``score(output) -> (N,)``,
resolved once per call), :class:`Similarity` (an embedding's cosine
similarity to a reference) and :class:`Custom` (any callable). Grad-CAM's
linearity in the score (Selvaraju et al., ICCV 2017,
https://arxiv.org/abs/1610.02391) is what makes composed scores meaningful.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from explainzoo.backbones import Backbone, ExplainzooError

__all__ = ["EMBEDDING_HINT", "Custom", "Similarity", "Target", "check_rows", "logits_of", "per_image"]

EMBEDDING_HINT = "use T.Similarity(reference) or a callable (out) -> (N,)"


class Target(abc.ABC):
    """A differentiable score per image, ``score(output) -> (N,)``.

    A target given by the user is *unresolved*; :meth:`resolve` binds it to the
    N images of one call (class names looked up, "top-1" chosen). Only a
    resolved target scores. ``indices`` are the (N,) class indices explained
    when the target is about one class per image, else None.
    """

    #: Whether :meth:`scores` with ``softmax=True`` scores the softmax of the
    #: output (targets made of class logits); others are scored as they are.
    on_logits: ClassVar[bool] = False

    @property
    def needs_output(self) -> bool:
        """Whether :meth:`resolve` needs the clean output (e.g. "each image's top-1")."""
        return False

    @property
    def indices(self) -> Tensor | None:
        """(N,) class per image once resolved (None for targets that are no one class)."""
        return None

    @property
    def description(self) -> str:
        """A short human description (e.g. ``"tiger cat - tabby (logit contrast)"``)."""
        return type(self).__name__

    @abc.abstractmethod
    def resolve(
        self, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
        device: torch.device | None = None,
    ) -> Target:
        """This target bound to the N images whose clean scored output is ``output``.

        Args:
            output: the model's scored output on the unmodified images; may be
                None when :attr:`needs_output` is False (then pass ``n``).
            n, device: the batch size and device when ``output`` is None.
        """

    @abc.abstractmethod
    def score(self, output: Tensor) -> Tensor:
        """(N,) scores of a model output (differentiable; resolved targets only).

        A target resolved for one image scores any number of rows (its copies).
        """

    def image(self, i: int) -> Target:
        """The target of image ``i`` alone (resolved, or unresolved for one image)."""
        return self

    def select(self, rows: Tensor) -> Target:
        """A resolved target for rows that are copies of the images ``rows`` (R,)."""
        return self

    def scores(self, output: Tensor, softmax: bool = False) -> Tensor:
        """(N,) float32 scores; with ``softmax`` a logit target (:attr:`on_logits`)
        scores the softmax probabilities instead (the perturbation papers'
        "probability"): a class's probability, a group's total probability,
        p_a - p_b for a contrast. Other targets are scored as they are."""
        out = output.float()
        if softmax and self.on_logits:
            out = logits_of(out, self).softmax(dim=1)
        return self.score(out).float()

    def __repr__(self) -> str:
        return f"<target {self.description}>"


def logits_of(output: Tensor, target: Target) -> Tensor:
    """``output`` if it is (N, classes) logits, else the one-line error."""
    if output.ndim != 2:
        hint = "T.Region(class, mask) for a dense (N,K,H,W) output" if output.ndim == 4 else EMBEDDING_HINT
        raise ExplainzooError(
            f"target {target.description} needs (N, classes) logits, but the model's scored output "
            f"has shape {tuple(output.shape)}; use {hint}"
        )
    return output


def per_image(t: Tensor, i: int | Tensor) -> Tensor:
    """Row(s) of a per-image tensor (N,...), or the shared one (1,...) as is."""
    if t.shape[0] == 1:
        return t
    return t[i : i + 1] if isinstance(i, int) else t[i.to(t.device)]


def check_rows(t: Tensor, n: int | None, what: str) -> None:
    if n is not None and t.shape[0] not in (1, n):
        raise ExplainzooError(f"got {t.shape[0]} {what}s for a batch of {n} images; pass one, or one per image")


class Similarity(Target):
    """Cosine similarity of the output (an embedding, flattened per image) to a reference.

    Args:
        reference: the reference embedding (D,) or one per image (N,D)
            (e.g. ``bb.model(other_x)`` of an embedding backbone).
    """

    def __init__(self, reference: Any) -> None:
        ref = torch.as_tensor(reference) if not isinstance(reference, Tensor) else reference
        if ref.ndim == 0 or ref.numel() == 0:
            raise ExplainzooError(f"Similarity needs a reference embedding (D,) or (N,D), got {ref!r}")
        self.reference = (ref.reshape(1, -1) if ref.ndim == 1 else ref.flatten(1)).detach().float()

    @property
    def description(self) -> str:
        return f"cosine similarity to the reference embedding ({self.reference.shape[1]} values)"

    def resolve(self, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
                device: torch.device | None = None) -> Similarity:
        check_rows(self.reference, output.shape[0] if output is not None else n, "reference embedding")
        return self

    def image(self, i: int) -> Similarity:
        new = copy.copy(self)
        new.reference = per_image(self.reference, i)
        return new

    def select(self, rows: Tensor) -> Similarity:
        new = copy.copy(self)
        new.reference = per_image(self.reference, rows)
        return new

    def score(self, output: Tensor) -> Tensor:
        flat = output.flatten(1)
        if flat.shape[1] != self.reference.shape[1]:
            raise ExplainzooError(
                f"the reference embedding has {self.reference.shape[1]} values but the model's output has "
                f"{flat.shape[1]} per image; take the reference from the same backbone"
            )
        return F.cosine_similarity(flat, self.reference.to(flat), dim=1)


class Custom(Target):
    """Any callable ``fn(output) -> (N,)`` tensor, differentiable in the output.

    Args:
        fn: e.g. ``lambda out: out[:, 3] - out[:, 5]``.
        description: how results name it (default: the function's name).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], description: str | None = None) -> None:
        if not callable(fn):
            raise ExplainzooError(f"Custom needs a callable (out) -> (N,), got {fn!r}")
        self.fn = fn
        self._description = description or f"custom score {getattr(fn, '__name__', type(fn).__name__)}"

    @property
    def description(self) -> str:
        return self._description

    def resolve(self, backbone: Backbone, output: Tensor | None = None, *, n: int | None = None,
                device: torch.device | None = None) -> Custom:
        return self

    def score(self, output: Tensor) -> Tensor:
        value = self.fn(output)
        name = self._description
        if not isinstance(value, Tensor):
            raise ExplainzooError(
                f"target {name} returned a {type(value).__name__}, not a tensor; return a torch "
                "expression of the output with one score per image, shape (N,)"
            )
        if tuple(value.shape) != (output.shape[0],):
            raise ExplainzooError(
                f"target {name} returned shape {tuple(value.shape)} for {output.shape[0]} images; "
                f"return one score per image, shape ({output.shape[0]},)"
            )
        if output.requires_grad and not value.requires_grad:
            raise ExplainzooError(
                f"target {name} is not differentiable in the output (detached, or converted to "
                "numpy/float?); keep it a torch expression of the output"
            )
        return value
