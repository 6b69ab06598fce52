"""Preprocessing of defect images to network input; describes itself like the signal transforms.

Resizing is OpenCV's (`resize_image`), the same in training and in the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from signal2image.base import channel_stats, check_stats, normalise

POLICIES = ("resize", "center_crop", "pad")


class ImageTransform:
    """Decoded images (float [0, 1], (H, W) grey or (H, W, 3) colour) -> normalised (N, 3, S, S).

    Args:
        image_size: side of the square output.
        policy: ``resize`` (squash to the square), ``center_crop`` (shorter side to S, centre crop)
            or ``pad`` (longer side to S, pad the rest with the image's mean).
        mean, std: per-channel normalisation of the network (the backbone's, or fitted by `fit`).
        channels: 3 (RGB; grey images replicated) or 1 (grey; colour images averaged), for a
            backbone whose first convolution was adapted to one input.
    """

    kind = "image"

    def __init__(
        self,
        *,
        image_size: int = 64,
        policy: str = "resize",
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channels: int = 3,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is not supported; use one of {list(POLICIES)}")
        check_stats(tuple(mean), tuple(std), channels)
        self.channels = int(channels)
        self.image_size = int(image_size)
        self.policy = policy
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "image_size": self.image_size,
            "policy": self.policy,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
        }

    def __repr__(self) -> str:
        return f"ImageTransform(image_size={self.image_size}, policy={self.policy!r})"

    def fit_size(self, image: np.ndarray) -> torch.Tensor:
        """One decoded image -> (3, S, S) in [0, 1] (grey replicated), before normalisation."""
        return self.fit_sizes([image])[0]

    def fit_sizes(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Decoded images -> (N, 3, S, S) in [0, 1], each resized by `resize_image` (OpenCV)."""
        s = self.image_size
        out = torch.empty((len(images), 3, s, s), dtype=torch.float32)
        planes = out.numpy()  # the same memory
        for i, image in enumerate(images):
            arr = np.asarray(image, dtype=np.float32)
            if arr.ndim == 3 and arr.shape[2] == 1:
                arr = arr[:, :, 0]
            if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
                raise ValueError(f"an image must be (H, W) or (H, W, 3), got shape {np.shape(image)}")
            sized = self._sized(arr)
            planes[i] = sized if sized.ndim == 2 else sized.transpose(2, 0, 1)  # grey fills all three
        return out

    def _sized(self, x: np.ndarray) -> np.ndarray:
        """(H, W) or (H, W, 3) -> (S, S) or (S, S, 3) by the policy."""
        h, w = x.shape[:2]
        s = self.image_size
        if self.policy == "resize":
            return resize_image(x, s, s)
        if self.policy == "center_crop":
            scale = s / min(h, w)
            x = resize_image(x, max(s, round(h * scale)), max(s, round(w * scale)))
            top, left = (x.shape[0] - s) // 2, (x.shape[1] - s) // 2
            return x[top : top + s, left : left + s]
        scale = s / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = resize_image(x, nh, nw)
        canvas = np.full((s, s, *x.shape[2:]), x.mean(), dtype=np.float32)  # pad with the image's mean
        top, left = (s - nh) // 2, (s - nw) // 2
        canvas[top : top + nh, left : left + nw] = x
        return canvas

    def _channels(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=1, keepdim=True) if self.channels == 1 else batch.clone()

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [0, 1] -> network input (N, channels, S, S), a new tensor."""
        return normalise(self._channels(batch), self.mean, self.std)

    def fit(self, batch: torch.Tensor) -> None:
        """Fit the channel mean/std on training images (N, 3, S, S) in [0, 1]."""
        self.mean, self.std = channel_stats(self._channels(batch))

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        if len(images) == 0:
            return torch.zeros((0, self.channels, self.image_size, self.image_size))
        return self.normalise(self.fit_sizes(images))


def resize_image(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize a float image (H, W) or (H, W, C) to (h, w): the one resampling of every policy.

    Shrinking uses OpenCV's INTER_AREA (each output pixel the area-weighted mean of the input pixels
    it covers: no aliasing of fine texture such as scratches); enlarging uses INTER_LINEAR, the
    bilinear interpolation the transform used before OpenCV, so upscaled inputs keep the values
    earlier models were trained on, and which, unlike INTER_CUBIC, cannot overshoot [0, 1]. When one
    axis shrinks and the other grows, each gets its own pass (INTER_AREA only averages when both
    shrink).
    """
    ih, iw = image.shape[:2]
    if (ih, iw) == (h, w):
        return image
    image = np.ascontiguousarray(image, dtype=np.float32)
    if h <= ih and w <= iw:
        out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    elif h >= ih and w >= iw:
        out = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        shrunk = (w, ih) if w < iw else (iw, h)
        out = cv2.resize(
            cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR
        )
    if out.ndim < image.ndim:  # OpenCV drops a last axis of length 1
        out = out[..., None]
    return np.clip(out, 0.0, 1.0, out=out)
