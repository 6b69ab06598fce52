"""Image decoding (temporary copy; replaced by the OpenCV version)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


def decode_image(source: str | Path | bytes) -> np.ndarray:
    """Decode a file or bytes to float32 in [0, 1]: (H, W) for grayscale, (H, W, 3) for colour.

    Raises:
        ValueError: not an image, or truncated/corrupt.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            return _to_float(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def _to_float(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() <= 65535 else float(2**31 - 1)
        return (np.clip(arr, 0, None) / top).astype(np.float32)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if mode in ("RGBA", "PA", "P") and ("transparency" in img.info or mode != "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]  # colour container holding a grey image
    return rgb
