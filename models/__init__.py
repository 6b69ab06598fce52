"""Backbones (registry), their weights, preprocessing and layer groups."""

from models import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers its backbones)
from models import torchvision_zoo as _torchvision_zoo  # noqa: F401  (registers its backbones)
from models.registry import (
    Preprocessing,
    WeightsNotFoundError,
    adapt_first_conv,
    build_model,
    get_preprocessing,
    head_path,
    layer_groups,
    list_backbones,
    register_backbone,
    replace_module,
)

__all__ = [
    "Preprocessing",
    "WeightsNotFoundError",
    "adapt_first_conv",
    "build_model",
    "get_preprocessing",
    "head_path",
    "layer_groups",
    "list_backbones",
    "register_backbone",
    "replace_module",
]
