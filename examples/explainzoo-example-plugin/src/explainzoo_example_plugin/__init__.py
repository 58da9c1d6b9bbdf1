"""An example explainzoo plugin: one explainer and one backbone family.

Both are registered through entry points (see ``pyproject.toml``); explainzoo
imports this package only when one of them is first used.
"""

from .cams import GradCAMElementWise
from .tinynet import TinyNetFamily

__all__ = ["GradCAMElementWise", "TinyNetFamily"]
