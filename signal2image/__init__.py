"""Signal-to-image transforms (CWT, STFT, grid, GAF, image), raw-signal preparation, image decoding.

The same code runs in training and in the service, which rebuilds a model's transform with `from_dict`.
Dependency rule: signal2image imports no other package of this project (not models, deploy or pipeline).

The transforms need torch; the package itself does not: they are imported when first named, so
`signal2image.prepare`, `signal2image.errors`, `signal2image.imageio` and `signal2image.onnx_graph`
load without torch (the service runs a raw-signal model with onnxruntime and numpy only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signal2image.base import SignalToImage
    from signal2image.cwt import CwtTransform
    from signal2image.grid import GafTransform, GridTransform
    from signal2image.image import ImageTransform
    from signal2image.stft import StftTransform

_MODULES = {
    "SignalToImage": "signal2image.base",
    "CwtTransform": "signal2image.cwt",
    "StftTransform": "signal2image.stft",
    "GridTransform": "signal2image.grid",
    "GafTransform": "signal2image.grid",
    "ImageTransform": "signal2image.image",
}
_KINDS = {"cwt": "CwtTransform", "stft": "StftTransform", "grid": "GridTransform", "gaf": "GafTransform"}
_KINDS["image"] = "ImageTransform"


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'signal2image' has no attribute {name!r}")


def list_transforms() -> list[str]:
    """The transform kinds `from_dict` accepts, sorted (``cwt``, ``gaf``, ...)."""
    return sorted(_KINDS)


def from_dict(spec: dict[str, Any]) -> SignalToImage | ImageTransform:
    """Rebuild a transform from its `to_dict()` description.

    Raises:
        ValueError: the kind is unknown or a setting is invalid.
    """
    settings = dict(spec)
    kind = settings.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; valid kinds: {list_transforms()}")
    if kind == "cwt":  # described before the key existed: computed at every sample, then resized
        settings.setdefault("sampling", "full")
    cls = __getattr__(_KINDS[kind])
    return cls(**settings)


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
