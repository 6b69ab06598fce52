"""torchvision's ImageNet CNNs: ResNet-18/34/50, VGG-16(-BN), MobileNet-V2/V3, EfficientNet-B0,
DenseNet-121, ConvNeXt-Tiny, each with a new head and its layer groups.

Weights come through torchvision's own mechanism: the file torchvision would download lives in
the torch hub cache (`$TORCH_HOME/hub/checkpoints/<file>`); it is downloaded there when a network
exists, and otherwise the error names the file to place there. A local .pth file works too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from models.registry import (
    Preprocessing,
    WeightsNotFoundError,
    load_weights,
    read_state_dict,
    register_backbone,
    replace_module,
)

NO_DOWNLOAD_ENV = "PIPELINE_NO_DOWNLOAD"  # set: never try the network (tests, air-gapped lines)


def _weights_enum(arch: str) -> tvm.WeightsEnum:
    return tvm.get_model_weights(arch).DEFAULT


def cache_file(arch: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of `arch`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights_enum(arch).url).name


def imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of `arch`: from the hub cache, downloaded there if a network exists."""
    weights = _weights_enum(arch)
    file = cache_file(arch)
    if not file.is_file():
        how = (
            f"download {weights.url} on a machine with internet and place it at {file} "
            f"(or set TORCH_HOME), or set model.weights to a local .pth file, or use a 'scratch' strategy"
        )
        if os.environ.get(NO_DOWNLOAD_ENV):
            raise WeightsNotFoundError(
                f"ImageNet weights for {arch} are not in the torch hub cache ({file}); {how}"
            )
        try:
            return torch.hub.load_state_dict_from_url(
                weights.url, progress=False, check_hash=True, weights_only=True, map_location="cpu"
            )
        except Exception as exc:  # no network, proxy, hash mismatch: all end in the same advice
            raise WeightsNotFoundError(
                f"ImageNet weights for {arch} could not be downloaded "
                f"({type(exc).__name__}: {str(exc)[:120]}); {how}"
            ) from None
    return read_state_dict(file)


def _preprocessing(arch: str) -> Preprocessing:
    t = _weights_enum(arch).transforms()
    return Preprocessing(mean=tuple(t.mean), std=tuple(t.std), input_size=int(t.crop_size[0]))


def _linear_in(module: nn.Module) -> int:
    return next(m for m in reversed(list(module.modules())) if isinstance(m, nn.Linear)).in_features


# Per family: where the ImageNet classifier sits, and the group of each parameter (by name).
def _resnet_groups(name: str) -> str:
    first = name.split(".")[0]
    return {"conv1": "stem", "bn1": "stem", "fc": "head"}.get(first, first.replace("layer", "stage"))


def _indexed(prefix: str, bounds: list[int], names: list[str]) -> Callable[[str], str]:
    """Groups from block indices of `prefix.<i>`: names[k] for indices below bounds[k]."""

    def group(name: str) -> str:
        m = re.match(rf"{re.escape(prefix)}\.(\d+)\.", name)
        if not m:
            return "head"
        i = int(m.group(1))
        return next(n for b, n in zip(bounds, names) if i < b)

    return group


def _vgg_groups(pools: list[int]) -> Callable[[str], str]:
    feature = _indexed("features", [p + 1 for p in pools], ["stem", "stage1", "stage2", "stage3", "stage4"])
    return lambda name: (
        feature(name)
        if name.startswith("features.")
        else ("head" if name.startswith("classifier.6") else "fc_layers")
    )


def _densenet_groups(name: str) -> str:
    part = name.split(".")[1] if name.startswith("features.") else "classifier"
    if part in ("conv0", "norm0"):
        return "stem"
    m = re.match(r"(denseblock|transition)(\d)", part)
    if m:
        return f"stage{m.group(2)}"
    return "stage4" if part == "norm5" else "head"


def _convnext_groups(name: str) -> str:
    m = re.match(r"features\.(\d+)\.", name)
    if m:
        i = int(m.group(1))
        return "stem" if i == 0 else f"stage{(i + 1) // 2}"  # downsampling 2, 4, 6 opens stages 2, 3, 4
    return (
        "head" if name.startswith("classifier.2") else "stage4"
    )  # the final LayerNorm belongs to the last stage


def _mobile_groups(
    bounds: list[int], names: list[str], head: str, pre_head: str | None
) -> Callable[[str], str]:
    feature = _indexed("features", bounds, names)

    def group(name: str) -> str:
        if name.startswith("features."):
            return feature(name)
        if name.startswith(head):
            return "head"
        return pre_head or "head"

    return group


# The layer Grad-CAM explains: the deepest module whose output is at stride 8 (8 x 8 at 64 px).
_EXPLAIN_LAYERS: dict[str, str] = {
    "resnet18": "layer2",
    "resnet34": "layer2",
    "resnet50": "layer2",
    "vgg16": "features.22",  # the ReLU after the last convolution before the fourth pooling
    "vgg16_bn": "features.32",
    "mobilenet_v2": "features.6",
    "mobilenet_v3_large": "features.6",
    "mobilenet_v3_small": "features.3",
    "efficientnet_b0": "features.3",
    "densenet121": "features.denseblock2",
    "convnext_tiny": "features.3",
}

# arch: (head module path, group function, dropout module path or None: wrap the head)
_FAMILIES: dict[str, tuple[str, Callable[[str], str], str | None]] = {
    "resnet18": ("fc", _resnet_groups, None),
    "resnet34": ("fc", _resnet_groups, None),
    "resnet50": ("fc", _resnet_groups, None),
    "vgg16": ("classifier.6", _vgg_groups([4, 9, 16, 23, 30]), "classifier.5"),
    "vgg16_bn": ("classifier.6", _vgg_groups([6, 13, 23, 33, 43]), "classifier.5"),
    "mobilenet_v2": (
        "classifier.1",
        _mobile_groups(
            [1, 4, 7, 11, 14, 17, 19],
            ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6"],
            "classifier",
            None,
        ),
        "classifier.0",
    ),
    "mobilenet_v3_large": (
        "classifier.3",
        _mobile_groups(
            [1, 4, 7, 11, 13, 17],
            ["stem", "stage1", "stage2", "stage3", "stage4", "stage5"],
            "classifier.3",
            "stage5",
        ),
        "classifier.2",
    ),
    "mobilenet_v3_small": (
        "classifier.3",
        _mobile_groups(
            [1, 2, 4, 7, 9, 13],
            ["stem", "stage1", "stage2", "stage3", "stage4", "stage5"],
            "classifier.3",
            "stage5",
        ),
        "classifier.2",
    ),
    "efficientnet_b0": (
        "classifier.1",
        _mobile_groups([1, 3, 5, 7, 9], ["stem", "stage1", "stage2", "stage3", "stage4"], "classifier", None),
        "classifier.0",
    ),
    "densenet121": ("classifier", _densenet_groups, None),
    "convnext_tiny": ("classifier.2", _convnext_groups, None),
}


def _register(arch: str) -> None:
    head_path, groups, dropout_path = _FAMILIES[arch]

    @register_backbone(
        arch,
        _preprocessing(arch),
        head=head_path if dropout_path else f"{head_path}.1",
        groups=groups,
        explain_layer=_EXPLAIN_LAYERS[arch],
    )
    def build(
        *, num_classes: int, pretrained: bool, dropout: float = 0.2, weights_path: Path | None = None
    ) -> nn.Module:
        model = tvm.get_model(arch, weights=None)
        if pretrained:
            state = read_state_dict(weights_path) if weights_path else imagenet_state(arch)
            source = str(weights_path) if weights_path else f"the ImageNet weights of {arch}"
            load_weights(model, state, backbone=arch, source=source)
        features = _linear_in(model.get_submodule(head_path))
        if dropout_path:  # the family has its own dropout before the head
            model.get_submodule(dropout_path).p = dropout
            replace_module(model, head_path, nn.Linear(features, num_classes))
        else:
            replace_module(
                model, head_path, nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
            )
        return model

    build.__doc__ = (
        f"torchvision {arch} with a new head (ImageNet weights from the torch hub cache, or `weights_path`)."
    )


for _arch in _FAMILIES:
    _register(_arch)
