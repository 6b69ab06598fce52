"""One factory over a plain dict of backbone builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def build_model(name: str, *, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    """Backbone `name` with a new head of `num_classes` outputs, from ImageNet weights or random init.

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: `pretrained` and the weights file is not installed.
    """
    return _entry(name).builder(num_classes=num_classes, pretrained=pretrained, **kwargs)
