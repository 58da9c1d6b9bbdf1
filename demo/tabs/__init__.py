"""The app's tabs, in order: each module has ``TITLE`` and ``build(ctx)`` (layout, handlers, events).

Adding a tab is one module here plus its name in :data:`TABS`.
"""

from __future__ import annotations

from . import activations, compare_backbones, compare_explainers, evaluate, explain, filters
from .common import CONCURRENCY_ID, TabContext

__all__ = ["CONCURRENCY_ID", "TABS", "TabContext"]

TABS = (explain, compare_backbones, compare_explainers, evaluate, filters, activations)
