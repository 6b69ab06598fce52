"""Image decoding for training and the service alike: bytes or a file -> float32 in [0, 1].

Decoding goes through OpenCV (`cv2.imdecode`) with the flags
``IMREAD_COLOR | IMREAD_ANYCOLOR | IMREAD_ANYDEPTH``. Since OpenCV 4.11 that combination keeps the
file's own channels (grey, colour, alpha) and bit depth, like ``IMREAD_UNCHANGED``, but unlike
``IMREAD_UNCHANGED`` (which skips it) it applies the EXIF orientation (OpenCV's `calcType` in
imgcodecs/src/loadsave.cpp, pull request opencv/opencv#26181; before 4.11 the same flags force three
8-bit channels and drop alpha, hence the requirement ``opencv-python-headless>=4.11``).

The result: (H, W) for grey, (H, W, 3) RGB for colour (OpenCV's BGR is reordered); 8-bit scaled by
1/255, 16-bit by 1/65535, 32-bit integer by 1/65535 if no value exceeds it else by the type's
maximum (negatives clipped to 0), floating point min-max scaled; alpha composited over white; a
colour container holding a grey image comes back as (H, W).

Pillow is still used for two things, both where OpenCV cannot give the right answer:

* Bytes OpenCV does not decode at all (`cv2.imdecode` returns nothing): formats it has no decoder
  for (ICO, TGA, PSD, PCX, ...) and damaged files get a second reading by Pillow, as they had
  before this module. So every file that decoded before still decodes (a JPEG that lacks only its
  end marker, say), and one that neither reads raises ValueError with Pillow's reason ("image file
  is truncated") or "not an image ..." when neither knows the format: OpenCV gives no reason.
* TIFF files with an alpha channel: OpenCV reads 8-bit TIFF through libtiff's RGBA interface, which
  premultiplies unassociated alpha by the colour, and does not say whether what it returns is
  premultiplied, so compositing over white would come out too dark. Pillow tells the two apart.

OpenCV refuses images over ``OPENCV_IO_MAX_IMAGE_PIXELS`` pixels (its default is 2**30); this module
sets that default, before OpenCV is first imported, to Pillow's decompression-bomb limit
(2 x 89,478,485 pixels), which the Pillow path enforces itself, so both paths refuse the same sizes.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

PIXEL_LIMIT = 2 * 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS x 2: where it raises DecompressionBombError
if "cv2" not in sys.modules:  # read once, when OpenCV's imgcodecs library loads
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(PIXEL_LIMIT))

import cv2  # noqa: E402

_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def decode_image(source: str | Path | bytes) -> np.ndarray:
    """Decode a file or bytes to float32 in [0, 1]: (H, W) for grayscale, (H, W, 3) for colour.

    Raises:
        ValueError: not an image, truncated/corrupt, too large, or the file cannot be read.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), _FLAGS) if data else None
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" in str(exc):
            raise ValueError(f"the image exceeds the decoder's limit of {_pixel_limit():,} pixels") from None
        arr = None
    if arr is None or (arr.ndim == 3 and arr.shape[2] == 4 and data[:4] in _TIFF_MAGIC):
        return _to_float(_decode_pillow(data))
    if arr.ndim == 3:  # BGR(A) -> RGB(A)
        if arr.dtype in (np.uint8, np.uint16, np.float32):  # what cvtColor takes: 4x faster than numpy
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        else:
            arr = arr[..., [2, 1, 0, 3]] if arr.shape[2] == 4 else arr[..., ::-1]
    return _to_float(arr)


def _pixel_limit() -> int:
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
    except ValueError:
        return 1 << 30


def _scaled(arr: np.ndarray) -> np.ndarray:
    """Samples of one dtype -> float32 in [0, 1] by the bit depth (floating point: min-max)."""
    if arr.dtype == np.uint8:
        return np.divide(arr, np.float32(255.0), dtype=np.float32)
    if arr.dtype == np.uint16:
        return np.divide(arr, np.float32(65535.0), dtype=np.float32)
    if arr.dtype.kind in "iu":
        wide = arr.astype(np.float64)
        top = 65535.0 if wide.max() <= 65535 else float(np.iinfo(arr.dtype).max)
        return (np.clip(wide, 0, None) / top).astype(np.float32)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    raise ValueError(f"unsupported sample type {arr.dtype}")


def _to_float(arr: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 3) RGB or (H, W, 4) RGBA samples -> float32 (H, W) or (H, W, 3) in [0, 1]."""
    if arr.ndim == 2:
        return _scaled(arr)
    if arr.shape[2] == 4:
        alpha = _scaled(arr[..., 3]) if arr.dtype.kind != "f" else np.clip(arr[..., 3], 0, 1)
        alpha = alpha.astype(np.float32)[..., None]
        rgb = _scaled(arr[..., :3]) * alpha + (1.0 - alpha)  # over a white background
    else:
        rgb = _scaled(arr)
    first = rgb[0]  # most colour images differ already in the first row: a cheap early answer
    if (
        np.array_equal(first[:, 0], first[:, 1])
        and np.array_equal(first[:, 1], first[:, 2])
        and np.array_equal(rgb[..., 0], rgb[..., 1])
        and np.array_equal(rgb[..., 1], rgb[..., 2])
    ):
        return np.ascontiguousarray(rgb[..., 0])  # colour container holding a grey image
    return rgb


def _decode_pillow(data: bytes) -> np.ndarray:
    """Pillow's reading of what OpenCV could not decode (see the module's docstring), as samples."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return np.asarray(img).astype(np.uint16)
            if mode in ("I", "F"):
                return np.asarray(img)
            if mode in ("1", "L"):
                return np.asarray(img.convert("L"))
            if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in img.info):
                return np.asarray(img.convert("RGBA"))
            return np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image in a format that OpenCV or Pillow reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
