"""Backbones (registry), their weights and preprocessing."""

from models import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers its backbones)
from models.registry import Preprocessing, build_model, get_preprocessing, list_backbones, register_backbone

__all__ = ["Preprocessing", "build_model", "get_preprocessing", "list_backbones", "register_backbone"]
