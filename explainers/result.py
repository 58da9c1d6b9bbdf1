"""The one result type every explainer returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class Explanation:
    """What an explainer found, for a batch of N images.

    Attribution methods fill ``maps``; grid methods (``filters``,
    ``activations``) fill ``grid`` and ``tiles`` instead.

    Attributes:
        method: registry name of the explainer.
        backbone: backbone name.
        layer: the resolved module path (None for input-level methods).
        maps: (N,H,W) float32 in [0,1], aligned with the input.
        raw: (N,h,w) float32 map before upsampling and normalisation.
        grid: (N,C,GH,GW) float32 in [0,1]: the tiles laid out as one image
            (C=3 for RGB filter tiles, else 1).
        tiles: (N,K,C,h,w) the individual tiles before normalisation.
        targets: (N,) class indices explained.
        scores: (N,) the logits of those classes.
        options: the explainer options used.
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

    @property
    def kind(self) -> str:
        """"map" for attribution methods, "grid" for tile methods."""
        return "map" if self.maps is not None else "grid"

    def __len__(self) -> int:
        ref = self.maps if self.maps is not None else self.grid
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
        )
