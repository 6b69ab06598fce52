"""Backbones (a registry of builders), their pretrained weights, preprocessing, layer groups and
explanation layers, and the test-time view average (`models.views`).

Importing the package registers every backbone (EfficientNet-Lite, torchvision's zoo).
Dependency rule: models imports only signal2image (for `UserError`), nothing from pipeline or deploy.
"""

from models import efficientnet_lite as _efficientnet_lite  # noqa: F401  (registers its backbones)
from models import torchvision_zoo as _torchvision_zoo  # noqa: F401  (registers its backbones)
from models.registry import (
    BandProfile,
    Preprocessing,
    WeightsNotFoundError,
    adapt_first_conv,
    add_band_profile,
    build_model,
    explain_layer,
    get_preprocessing,
    head_path,
    layer_groups,
    list_backbones,
    register_backbone,
    replace_module,
)
from models.views import (
    VIEWS,
    ClassOffset,
    ViewAverage,
    decision_model,
    scoring_head,
    single_view,
    view_count,
    with_views,
)

__all__ = [
    "Preprocessing",
    "WeightsNotFoundError",
    "BandProfile",
    "adapt_first_conv",
    "add_band_profile",
    "build_model",
    "explain_layer",
    "get_preprocessing",
    "head_path",
    "layer_groups",
    "list_backbones",
    "register_backbone",
    "replace_module",
    "VIEWS",
    "ClassOffset",
    "ViewAverage",
    "decision_model",
    "scoring_head",
    "single_view",
    "view_count",
    "with_views",
]
