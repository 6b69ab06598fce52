"""Signal-to-image transforms (CWT, STFT, grid, GAF, image), raw-signal preparation, image decoding.

The same code runs in training and in the service, which rebuilds a model's transform with `from_dict`.
Dependency rule: signal2image imports no other package of this project (not models, deploy or pipeline).
"""

from __future__ import annotations

from typing import Any

from signal2image.base import SignalToImage
from signal2image.cwt import CwtTransform
from signal2image.grid import GafTransform, GridTransform
from signal2image.image import ImageTransform
from signal2image.stft import StftTransform

_TRANSFORMS: dict[str, type[Any]] = {
    cls.kind: cls for cls in (CwtTransform, StftTransform, GridTransform, GafTransform, ImageTransform)
}


def list_transforms() -> list[str]:
    """The transform kinds `from_dict` accepts, sorted (``cwt``, ``gaf``, ...)."""
    return sorted(_TRANSFORMS)


def from_dict(spec: dict[str, Any]) -> SignalToImage | ImageTransform:
    """Rebuild a transform from its `to_dict()` description.

    Raises:
        ValueError: the kind is unknown or a setting is invalid.
    """
    settings = dict(spec)
    kind = settings.pop("kind", None)
    if kind not in _TRANSFORMS:
        raise ValueError(f"unknown transform kind {kind!r}; valid kinds: {list_transforms()}")
    return _TRANSFORMS[kind](**settings)


__all__ = [
    "SignalToImage",
    "CwtTransform",
    "StftTransform",
    "GridTransform",
    "GafTransform",
    "ImageTransform",
    "from_dict",
    "list_transforms",
]
