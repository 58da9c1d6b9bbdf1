"""``timm:<name>``: every model timm can build, with derived layer aliases.

The :class:`TimmFamily` knows timm: names, the data config, and the layer
hints timm models carry (``pretrained_cfg["first_conv"]``, ``feature_info``
stages, ``num_prefix_tokens``, ``output_fmt``, the ViT block layout). Weights
are resolved by :func:`~.builder.build_backbone` like every other family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .backbone import Backbone
from .builder import Hub, build_backbone
from .errors import ExplainzooError, unknown
from .family import BackboneFamily
from .labels import default_labels
from .layers import LayerHints
from .preprocess import Preprocessing

HUB_HINT = "Put them in the Hugging Face cache, pass checkpoint=PATH, or use pretrained=False for random init."


def _timm():
    import timm

    return timm


class TimmFamily(BackboneFamily):
    """Every model ``timm.list_models()`` knows, as ``timm:<model>``."""

    name = "timm"

    def list_names(self, pattern: str = "*") -> list[str]:
        """timm model names matching a wildcard (without the ``timm:`` prefix)."""
        return _timm().list_models(pattern or "*")

    def create(
        self,
        model_name: str,
        pretrained: bool = False,
        checkpoint: str | Path | None = None,
        **kwargs: Any,
    ) -> Backbone:
        """Build ``timm:<model_name>`` through the builder.

        Args:
            model_name: any name ``timm.list_models()`` knows (a ``.tag`` suffix allowed).
            pretrained: load ImageNet weights: an offline package when one is
                registered for this model, else timm's hub. An error when neither works.
            checkpoint: a state dict file; wins over ``pretrained``.
            **kwargs: passed to ``timm.create_model`` (``num_classes``,
                ``dynamic_img_size``, ``img_size``, ...).
        """
        if "checkpoint_path" in kwargs:
            raise ExplainzooError(
                "checkpoint_path= would bypass explainzoo's safe checkpoint loader: pass checkpoint=PATH instead"
            )
        timm = _timm()
        if not timm.is_model(model_name.split(".")[0]):
            hint = "(see `explainzoo list backbones 'timm:*'`)"
            raise unknown("timm model", model_name, timm.list_models(), hint)
        return build_backbone(
            f"timm:{model_name}",
            lambda: _create(model_name, False, kwargs),
            preprocessing=lambda model: _preprocessing(model, kwargs.get("img_size")),
            labels=lambda model: default_labels(int(getattr(model, "num_classes", 0) or 0)),
            pretrained=pretrained,
            checkpoint=checkpoint,
            offline=model_name,
            hub=Hub(lambda: _create(model_name, True, kwargs), _hub_provenance, HUB_HINT),
            layer_hints=self.hints_for,
        )

    def hints_for(self, model: nn.Module) -> LayerHints | None:
        """timm's knowledge of a timm model's layers; None for other models."""
        if not type(model).__module__.startswith("timm."):
            return None
        cfg = getattr(model, "pretrained_cfg", None) or {}
        first_conv = cfg.get("first_conv")
        if isinstance(first_conv, list | tuple):
            first_conv = first_conv[0] if first_conv else None
        info = getattr(model, "feature_info", None) or []
        stages = tuple(f["module"] for f in info if isinstance(f, dict) and "module" in f)
        last: tuple[str, ...] = ()
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, nn.Sequential) and len(blocks) and hasattr(model, "patch_embed"):
            # ViT/DeiT: with class-token pooling only the class token of the final norm
            # gets a gradient, so CAMs target the last block's norm1 (the attention
            # input), as pytorch-grad-cam recommends; with average pooling, the final norm
            token_pool = getattr(model, "global_pool", None) == "token"
            last = (f"blocks.{len(blocks) - 1}.norm1",) if token_pool else ("norm",)
        return LayerHints(
            first_conv=first_conv,
            stage_paths=stages,
            prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
            nhwc=getattr(model, "output_fmt", "NCHW") == "NHWC",
            last=last,
        )


def _create(model_name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = _timm().create_model(model_name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise ExplainzooError(f"timm:{model_name} rejected the options {kwargs}: {exc}") from exc
    return model  # num_classes=0: an embedding model (no labels, Backbone.kind == "embedding")


def _hub_provenance(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    tag = cfg.get("hf_hub_id") or cfg.get("tag") or ""
    return f"timm hub ({tag})".replace(" ()", "")


def _preprocessing(model: nn.Module, img_size: int | tuple[int, int] | None) -> Preprocessing:
    cfg = _timm().data.resolve_model_data_config(model)
    _, h, w = cfg["input_size"]
    if img_size is not None:  # pretrained_cfg keeps the default size; the model uses this one
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return Preprocessing(
        input_size=(int(h), int(w)),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=float(cfg.get("crop_pct", 0.875) or 1.0),
    )


#: The family instance (what ``explainzoo.backbone_families`` names).
TIMM = TimmFamily()


def list_names(pattern: str = "*") -> list[str]:
    """timm model names matching a wildcard (kept for older callers)."""
    return TIMM.list_names(pattern)


#: The older entry-point target: the family instance, callable as a factory
#: ``(model_name, pretrained, checkpoint, **kwargs) -> Backbone``.
create_timm_backbone = TIMM
