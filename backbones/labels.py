"""Class names: ImageNet's from timm for 1000-class models, ``class_i`` otherwise."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions, e.g. 'tabby, tabby cat'."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(1000))


def default_labels(num_classes: int) -> list[str]:
    """ImageNet names for 1000 classes, ``class_0..`` for any other count."""
    if num_classes == 1000:
        return list(imagenet_labels())
    return [f"class_{i}" for i in range(num_classes)]
