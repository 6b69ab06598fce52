"""One factory over a plain dict of backbone builders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from signal2image.errors import UserError

BAND_PROFILE = "band_profile"  # the module name of `add_band_profile`'s path


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects at its input: per-channel mean/std and the native input size."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int


class WeightsNotFoundError(UserError):
    """Pretrained weights were requested but are not on disk (and cannot be downloaded)."""


SHOWN_KEYS = 5  # at most this many key names in a message: a state dict has hundreds


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.pth`` file, read with ``weights_only=True`` (no code runs).

    Raises:
        UserError: the file is missing, is not a PyTorch checkpoint, or holds no dict of tensors.
    """
    file = Path(path)
    fix = "give a file written by torch.save(model.state_dict(), PATH), or model.weights: imagenet or none"
    if not file.is_file():
        raise WeightsNotFoundError(f"weights file {str(file)!r} not found; {fix}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a text file, a truncated zip, a pickle of other objects: all the same advice
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no details'}"
        raise UserError(f"{file} is not a PyTorch checkpoint (torch.load failed: {reason}); {fix}") from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # a checkpoint of `pipeline run` (model, optimizer, scheduler)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{file} holds a {type(state).__name__}, not a state dict of tensors; {fix}")
    return dict(state)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, backbone: str, source: str) -> None:
    """``model.load_state_dict(state, strict=True)``, or a short message when the keys or shapes differ.

    Raises:
        UserError: keys missing or unexpected (at most `SHOWN_KEYS` of each, with the counts), or
            tensors of other shapes.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{len(keys)} {what} ({_first(keys)})"
            for what, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("tensors of another shape (file vs model)", mismatched),
            )
            if keys
        ]
        raise UserError(
            f"{source} does not fit backbone {backbone!r}: {'; '.join(parts)}; the weights belong to another "
            f"architecture: set model.backbone to theirs, or give a state dict saved from {backbone} "
            "(torch.save(model.state_dict(), PATH), without a wrapper's 'module.' prefix)"
        )
    model.load_state_dict(state, strict=True)


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


@dataclass(frozen=True)
class BackboneEntry:
    """What `register_backbone` stores for one name: the builder and what the trainer needs to know."""

    builder: Callable[..., nn.Module]
    preprocessing: Preprocessing
    head: str  # module path of the new classification head (replaced by the linear probe)
    groups: Callable[[str], str]  # parameter name -> layer group (stem, stage<k>, ..., head)
    # Module path of the layer Grad-CAM explains: the last one at stride 8 (8 x 8 at 64 px), fine
    # enough to tell frequency bands apart where the last feature map (2 x 2 at 64 px) is not.
    explain_layer: str = ""


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str,
    preprocessing: Preprocessing,
    *,
    head: str,
    groups: Callable[[str], str],
    explain_layer: str,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a keyword-only builder
    ``fn(*, num_classes, pretrained, dropout, weights_path) -> nn.Module``.

    Args:
        preprocessing: what the pretrained weights expect (mean, std, input size).
        head: module path of the new head the builder puts in place.
        groups: the layer group of each parameter, by name, in the order stem, stages, head.
        explain_layer: module path of the layer whose activations Grad-CAM weighs (the deepest
            layer at stride 8, so a 64 px input gives an 8 x 8 map).
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        if not explain_layer:
            raise ValueError(f"backbone {name!r} needs an explain_layer (the module Grad-CAM explains)")
        _BACKBONES[name] = BackboneEntry(fn, preprocessing, head, groups, explain_layer)
        return fn

    return wrap


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted (valid values of ``model.backbone``)."""
    return sorted(_BACKBONES)


def _entry(name: str) -> BackboneEntry:
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {list_backbones()}")
    return _BACKBONES[name]


def get_preprocessing(name: str) -> Preprocessing:
    """The mean, std and native input size backbone `name` expects.

    Raises:
        ValueError: unknown name.
    """
    return _entry(name).preprocessing


def layer_groups(model: nn.Module, name: str) -> list[tuple[str, list[nn.Parameter]]]:
    """The model's parameters by layer group, groups in network order (stem first, head last)."""
    groups: dict[str, list[nn.Parameter]] = {}
    group_of = _entry(name).groups
    for pname, param in model.named_parameters():
        group = "head" if pname.startswith(f"{BAND_PROFILE}.") else group_of(pname)
        groups.setdefault(group, []).append(param)
    if "head" in groups:  # the head last, whatever order the module registered it in
        groups["head"] = groups.pop("head")
    return list(groups.items())


def replace_module(model: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put `module` at the dotted `path` (e.g. ``classifier.1``); returns the module it replaced."""
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = model.get_submodule(path)
    setattr(parent, leaf, module)  # also for Sequential/ModuleList children, whose names are "0", "1", ...
    return old


def head_path(name: str) -> str:
    """Dotted module path of backbone `name`'s new classification head (the linear probe's layer).

    Raises:
        ValueError: unknown name.
    """
    return _entry(name).head


def explain_layer(name: str) -> str:
    """Dotted module path of backbone `name`'s explanation layer (the target of Grad-CAM): the deepest
    layer at stride 8 of the input, whose map is 8 x 8 at 64 px (28 x 28 at 224 px).

    Raises:
        ValueError: unknown name.
    """
    return _entry(name).explain_layer


def build_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool,
    in_channels: int = 3,
    band_rows: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Backbone `name` with a new head of `num_classes` outputs, from ImageNet weights or random init.

    Args:
        in_channels: 3, or 1 for grey inputs (the first convolution adapted by `adapt_first_conv`).
        band_rows: add the `BandProfile` path for input images of this many rows (None: none).

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: `pretrained` and the weights file is not installed.
    """
    model = _entry(name).builder(num_classes=num_classes, pretrained=pretrained, **kwargs)
    if in_channels == 1:
        adapt_first_conv(model)
    elif in_channels != 3:
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if band_rows is not None:
        add_band_profile(model, rows=band_rows, num_classes=num_classes)
    return model


class BandProfile(nn.Module):
    """A linear map from the time-averaged rows of the input image to the logits.

    On a spectrogram or scalogram each row is one frequency band, so a row's mean over the columns
    (time) is the band's average level: the input of a linear spectrum model. Added to the CNN's
    logits it gives the network a path a convolution followed by global pooling lacks, the absolute
    level of each band (wide and deep). Zero at the start: the network begins as the CNN alone.
    """

    def __init__(self, rows: int, num_classes: int) -> None:
        super().__init__()
        self.rows = int(rows)
        self.linear = nn.Linear(self.rows, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2] != self.rows:
            raise ValueError(f"the band profile reads images of {self.rows} rows, got {image.shape[-2]}")
        return self.linear(image.mean(dim=(1, 3)))


def _add_band_logits(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return output + module.get_submodule(BAND_PROFILE)(args[0])


def add_band_profile(model: nn.Module, *, rows: int, num_classes: int) -> nn.Module:
    """Give `model` a `BandProfile` path (parameters ``band_profile.*``, in the ``head`` layer group):
    a forward hook adds its logits to the model's, so every backbone keeps its own forward and its
    parameter names, and tracing for ONNX records the sum."""
    model.add_module(BAND_PROFILE, BandProfile(rows, num_classes))
    model.register_forward_hook(_add_band_logits)
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
