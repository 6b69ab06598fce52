"""One factory over a plain dict of backbone builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects at its input: per-channel mean/std and the native input size."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int


@dataclass(frozen=True)
class BackboneEntry:
    builder: Callable[..., nn.Module]
    preprocessing: Preprocessing


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, preprocessing: Preprocessing) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a keyword-only builder ``fn(*, num_classes, pretrained, dropout) -> nn.Module``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = BackboneEntry(fn, preprocessing)
        return fn

    return wrap


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def _entry(name: str) -> BackboneEntry:
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {list_backbones()}")
    return _BACKBONES[name]


def get_preprocessing(name: str) -> Preprocessing:
    return _entry(name).preprocessing


def build_model(name: str, *, num_classes: int, pretrained: bool, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Backbone `name` with a new head of `num_classes` outputs, from ImageNet weights or random init.

    Args:
        in_channels: 3, or 1 for grey inputs (the first convolution adapted by `adapt_first_conv`).

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: `pretrained` and the weights file is not installed.
    """
    model = _entry(name).builder(num_classes=num_classes, pretrained=pretrained, **kwargs)
    if in_channels == 1:
        adapt_first_conv(model)
    elif in_channels != 3:
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    return model


def adapt_first_conv(model: nn.Module) -> nn.Module:
    """Make the first 3-input convolution take one channel, its filters the sum of the RGB filters.

    For a grey image g fed as (g, g, g), sum_c w_c * g = (sum_c w_c) * g: the adapted network computes
    what the original computed on the replicated image (exactly when the channels share one mean/std),
    with a third of the first layer's input work.
    """
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3 and conv.groups == 1:
            # In place: subclasses (TF-style "same" padding) keep their own forward.
            conv.weight = nn.Parameter(conv.weight.detach().sum(dim=1, keepdim=True).contiguous())
            conv.in_channels = 1
            return model
    raise ValueError(f"{type(model).__name__} has no convolution with 3 input channels to adapt")
