"""Dataset jobs: explain a whole folder, ImageFolder or list, on one machine or Ray.

>>> from explainzoo.batch import run_batch, load_results
>>> run_batch(["photos/"], backbones=["timm:resnet18"], explainers=["gradcam"], out="runs/cats")
>>> res = load_results("runs/cats")
>>> res.frame                  # one row per (image, backbone, method)
>>> res.map(res.frame.iloc[0])  # (H,W) float32 in [0,1], read back from the shards
>>> res.summary()              # per backbone x method

The folder format is documented in docs/batch.md.
"""

from __future__ import annotations

from .api import JobReport, run_batch
from .inputs import Item, collect
from .results import Results, decode_map, load_results
from .spec import JobSpec, build_backbone
from .store import SCHEMA_VERSION, schema

__all__ = [
    "SCHEMA_VERSION",
    "Item",
    "JobReport",
    "JobSpec",
    "Results",
    "build_backbone",
    "collect",
    "decode_map",
    "load_results",
    "run_batch",
    "schema",
]
