"""The one result type every explainer returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

#: The kinds of result: an attribution map per image, or a grid of tiles.
KINDS = ("map", "grid")


@dataclass(frozen=True)
class Explanation:
    """What an explainer found, for a batch of N images.

    ``kind`` comes from the explainer (:attr:`Explainer.kind`): ``"map"``
    methods fill ``maps`` and ``raw``; ``"grid"`` methods (``filters``,
    ``activations``) fill ``grid`` and ``tiles``.

    Attributes:
        method: registry name of the explainer.
        backbone: backbone name.
        layer: the resolved module path (None for input-level methods).
        maps: (N,H,W) float32 in [0,1], aligned with the input.
        raw: (N,h,w) float32 map before upsampling and normalisation.
        grid: (N,C,GH,GW) float32 in [0,1]: the tiles laid out as one image
            (C=3 for RGB filter tiles, else 1).
        tiles: (N,K,C,h,w) the individual tiles before normalisation.
        targets: (N,) class indices explained (-1 where the target is no one
            class: a contrast, a class group, a similarity, a callable).
        scores: (N,) the target's value per image on the unmodified input
            (the class logit for a class; the contrast, the probability, ...).
        target_description: what was explained, e.g. ``"tiger cat - tabby
            (logit contrast)"`` (:mod:`explainzoo.explainers.targets`).
        target: the resolved :class:`~explainzoo.explainers.targets.Target`
            (pass it to ``deletion``/``insertion`` to measure the same score).
        options: the explainer options used.
        kind: ``"map"`` or ``"grid"``.
        logits: (N,K) float32 logits of the unmodified input from the pass the
            explainer made anyway (None when it ran none: ``filters``,
            ``activations``, and for outputs that are no class logits: a dense
            segmentation map, an embedding); :attr:`probabilities` is their
            softmax. Showing a top-5 needs no second forward pass.
    """

    method: str
    backbone: str
    layer: str | None = None
    maps: Tensor | None = None
    raw: Tensor | None = None
    grid: Tensor | None = None
    tiles: Tensor | None = None
    targets: Tensor | None = None
    scores: Tensor | None = None
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "map"
    logits: Tensor | None = None
    target_description: str | None = None
    target: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Explanation kind must be one of {list(KINDS)}, got {self.kind!r}")

    @property
    def probabilities(self) -> Tensor | None:
        """(N,K) softmax of :attr:`logits` (None without logits)."""
        return None if self.logits is None else self.logits.float().softmax(dim=1)

    def __len__(self) -> int:
        ref = self.maps if self.kind == "map" else self.grid
        if ref is None:
            ref = self.grid if ref is self.maps else self.maps
        return 0 if ref is None else int(ref.shape[0])

    def __getitem__(self, i: int) -> Explanation:
        """The explanation of image ``i`` alone (a batch of one)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"explanation index {i} out of range for a batch of {n}")
        i = i % n
        pick = (lambda t: None if t is None else t[i : i + 1])  # noqa: E731
        return replace(
            self,
            maps=pick(self.maps),
            raw=pick(self.raw),
            grid=pick(self.grid),
            tiles=pick(self.tiles),
            targets=pick(self.targets),
            scores=pick(self.scores),
            logits=pick(self.logits),
            target=None if self.target is None else self.target.image(i),
        )
