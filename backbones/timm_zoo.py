"""``timm:<name>``: every model timm can build, with derived layer aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backbone import Backbone
from .errors import ExplainzooError, WeightsUnavailableError, unknown
from .labels import default_labels
from .preprocess import Preprocessing
from .weights import OFFLINE_PACKAGES, load_checkpoint, load_state_dict_checked, offline_state_dict


def _timm():
    import timm

    return timm


def list_names(pattern: str = "*") -> list[str]:
    """timm model names matching a wildcard (without the ``timm:`` prefix)."""
    return _timm().list_models(pattern or "*")


def create_timm_backbone(
    model_name: str,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build ``timm:<model_name>`` with weights resolved as documented in weights.py.

    Args:
        model_name: any name ``timm.list_models()`` knows (a ``.tag`` suffix allowed).
        pretrained: load ImageNet weights: an offline package when one is
            registered for this model, else timm's hub. An error when neither works.
        checkpoint: a state dict file; wins over ``pretrained``.
        **kwargs: passed to ``timm.create_model`` (``num_classes``,
            ``dynamic_img_size``, ``img_size``, ...).
    """
    timm = _timm()
    if not timm.is_model(model_name.split(".")[0]):
        raise unknown("timm model", model_name, timm.list_models(), "(see `explainzoo list backbones 'timm:*'`)")
    weights, is_pretrained = "random init", False
    use_offline = pretrained and checkpoint is None and model_name in OFFLINE_PACKAGES
    use_hub = pretrained and checkpoint is None and not use_offline
    try:
        model = timm.create_model(model_name, pretrained=use_hub, **kwargs)
    except TypeError as exc:
        raise ExplainzooError(f"timm:{model_name} rejected the options {kwargs}: {exc}") from exc
    except Exception as exc:
        if not use_hub:
            raise
        raise WeightsUnavailableError(
            f"no pretrained weights reachable for timm:{model_name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Put them in the Hugging Face cache, pass checkpoint=PATH, or use "
            "pretrained=False for random init."
        ) from exc
    if use_offline:
        offline = offline_state_dict(model_name, model)
        assert offline is not None  # registered: checked above
        load_state_dict_checked(model, *offline)
        weights, is_pretrained = offline[1], True
    elif checkpoint is not None:
        load_state_dict_checked(model, load_checkpoint(checkpoint), f"checkpoint {checkpoint}")
        weights, is_pretrained = f"checkpoint {checkpoint}", True
    elif use_hub:
        tag = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("tag") or ""
        weights, is_pretrained = f"timm hub ({tag})".replace(" ()", ""), True
    if not getattr(model, "num_classes", 0):
        raise ExplainzooError(f"timm:{model_name} was built without a classifier head; pass num_classes > 0")
    model.eval()
    cfg = timm.data.resolve_model_data_config(model)
    _, h, w = cfg["input_size"]
    if "img_size" in kwargs:  # pretrained_cfg keeps the default size; the model uses this one
        size = kwargs["img_size"]
        h, w = (size, size) if isinstance(size, int) else tuple(size)
    pre = Preprocessing(
        input_size=(int(h), int(w)),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")),
        crop_pct=float(cfg.get("crop_pct", 0.875) or 1.0),
    )
    first_conv = model.pretrained_cfg.get("first_conv")
    if isinstance(first_conv, list | tuple):
        first_conv = first_conv[0] if first_conv else None
    stages = [f["module"] for f in getattr(model, "feature_info", []) if isinstance(f, dict) and "module" in f]
    return Backbone(
        name=f"timm:{model_name}",
        model=model,
        preprocessing=pre,
        labels=default_labels(int(getattr(model, "num_classes", 0) or 0)),
        weights=weights,
        pretrained=is_pretrained,
        stage_paths=stages,
        first_conv=first_conv,
    )


create_timm_backbone.list_names = list_names  # type: ignore[attr-defined]
