"""Preprocessing of defect images to network input; describes itself like the signal transforms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
        """Decoded images -> (N, 3, S, S) in [0, 1]; images of one shape are resized as one batch."""
        out = torch.empty((len(images), 3, self.image_size, self.image_size), dtype=torch.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        arrays = []
        for i, image in enumerate(images):
            arr = np.asarray(image, dtype=np.float32)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.ndim != 3 or arr.shape[2] not in (1, 3):
                raise ValueError(f"an image must be (H, W) or (H, W, 3), got shape {arr.shape}")
            arrays.append(arr)
            groups.setdefault(arr.shape, []).append(i)
        for members in groups.values():
            x = torch.from_numpy(
                np.ascontiguousarray(np.stack([arrays[i] for i in members]).transpose(0, 3, 1, 2))
            )  # (n, C, H, W)
            sized = self._sized(x)
            out[members] = sized.expand(-1, 3, -1, -1) if sized.shape[1] == 1 else sized
        return out

    def _sized(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.image_size
        if self.policy == "resize":
            return _resize(x, s, s)
        if self.policy == "center_crop":
            scale = s / min(h, w)
            x = _resize(x, max(s, round(h * scale)), max(s, round(w * scale)))
            top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
            return x[..., top : top + s, left : left + s]
        scale = s / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = _resize(x, nh, nw)
        canvas = (
            x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, x.shape[1], s, s).clone()
        )  # pad with each image's mean
        top, left = (s - nh) // 2, (s - nw) // 2
        canvas[..., top : top + nh, left : left + nw] = x
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


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
