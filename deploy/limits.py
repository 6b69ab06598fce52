"""Checks the service makes before any costly or risky work: an image's pixel count from its header
(before decoding), where a reload may load a model from, and whether a listening address is
loopback (and so what `pipeline serve` must require before listening there).
"""

from __future__ import annotations

import io
import ipaddress
import warnings
from pathlib import Path

from PIL import Image

from signal2image.errors import UserError

LOOPBACK_NAMES = ("localhost",)


def image_pixels(data: bytes) -> int | None:
    """Width x height as the image's header declares them, without decoding a pixel.

    ``Image.open`` is lazy: it parses the header (PNG: the IHDR chunk; JPEG: the SOF marker) and
    leaves the pixels undecoded. A header beyond Pillow's own decompression-bomb limit counts as
    that limit + 1 (Pillow does not report its size).

    Returns:
        The pixel count, or None when Pillow does not recognise the bytes (decoding then says why).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        return 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
    except Exception:  # noqa: BLE001 - not an image (UnidentifiedImageError, OSError, SyntaxError, ...)
        return None
    return int(width) * int(height)


def is_registry_uri(source: str) -> bool:
    """A model in the MLflow registry (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``)."""
    return source.startswith("models:/")


def reload_allowed(source: str, *, started_with: str, model_root: str | Path | None) -> bool:
    """True when a reload may load `source`: a registry URI, the exact source the service started
    with, or (with a model root) a path that resolves inside `model_root`, symlinks resolved."""
    if is_registry_uri(source) or source == started_with:
        return True
    if model_root is None:
        return False
    root = Path(model_root).resolve()
    target = Path(source).resolve()
    return target == root or root in target.parents


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): only this machine can connect."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_policy(
    host: str, *, api_key: str | None, allow_unauthenticated: bool, protect_predict: bool
) -> bool:
    """Whether predict must require the API key when listening on `host`.

    On loopback, as asked (`protect_predict`). Beyond loopback, predict is protected whenever an
    API key is set; without a key the operator must say ``--allow-unauthenticated`` explicitly.

    Raises:
        UserError: beyond loopback with neither an API key nor ``--allow-unauthenticated``.
    """
    if is_loopback(host):
        return protect_predict
    if allow_unauthenticated:
        return protect_predict
    if api_key:
        return True
    raise UserError(
        f"--host {host} listens beyond loopback, where anyone who reaches the port could call predict "
        "without a key; either set the environment variable PIPELINE_API_KEY (predict then needs the "
        "X-API-Key header too), or pass --allow-unauthenticated to serve predict to the network without "
        "a key (reload stays disabled without a key); --host 127.0.0.1 serves this machine only"
    )
