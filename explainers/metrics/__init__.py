"""Which map can you trust? Faithfulness metrics, sanity checks and chance levels.

Tensors in, numbers out. Every metric runs the model in batched forward passes
under :func:`torch.inference_mode`, chunked by ``batch_size``, with the
backbone's lock held and its state restored (eval mode) afterwards, and
scores the explained target through :mod:`explainzoo.explainers.targets`.

* :mod:`.curves`: :func:`deletion` / :func:`insertion` (Petsiuk et al., RISE,
  BMVC 2018, https://arxiv.org/abs/1806.07421) and their :class:`Curve`.
* :mod:`.sanity`: :func:`cascading_randomization` (Adebayo et al., Sanity
  Checks for Saliency Maps, NeurIPS 2018, https://arxiv.org/abs/1810.03292).
* :mod:`.similarity`: :func:`spearman` and :func:`ssim` of two maps.
* :mod:`.pointing`: :func:`pointing_game` (Zhang et al., ECCV 2016,
  https://arxiv.org/abs/1608.00507). No forward pass.
* :mod:`.baselines`: :func:`random_maps` and :func:`random_baseline`, the
  chance level of every metric (smooth seeded noise at the layer's resolution).
* :mod:`.evaluation`: images x backbones x explainers -> rows of numbers
  (:func:`evaluate`, :func:`summary`, :func:`faithfulness`).

:data:`MAX_STEPS` and :data:`MAX_CASCADE_STEPS` cap the cost a server accepts.
"""

from .baselines import random_baseline, random_maps
from .curves import DEFAULT_BATCH_SIZE, MAX_STEPS, Curve, blur, deletion, insertion
from .evaluation import (
    CSV_FIELDS,
    RANDOM,
    Evaluation,
    Faithfulness,
    Row,
    chance_row,
    evaluate,
    evaluate_explanation,
    faithfulness,
    summary,
)
from .pointing import box_mask, pointing_game
from .sanity import MAX_CASCADE_STEPS, SanityResult, cascading_randomization
from .similarity import spearman, ssim

__all__ = [
    "CSV_FIELDS",
    "DEFAULT_BATCH_SIZE",
    "MAX_CASCADE_STEPS",
    "MAX_STEPS",
    "RANDOM",
    "Curve",
    "Evaluation",
    "Faithfulness",
    "Row",
    "SanityResult",
    "blur",
    "box_mask",
    "cascading_randomization",
    "chance_row",
    "deletion",
    "evaluate",
    "evaluate_explanation",
    "faithfulness",
    "insertion",
    "pointing_game",
    "random_baseline",
    "random_maps",
    "spearman",
    "ssim",
    "summary",
]
