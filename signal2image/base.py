"""Shared part of every signal-to-image transform: time-frequency magnitude -> network input.

A transform stores its settings in ``__init__``, computes the network input with ``__call__``
and describes itself with ``to_dict``; ``signal2image.from_dict`` rebuilds it, so the service runs
exactly the transform the model was trained with.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F


def normalise(batch: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> the network's input scale, per channel (in place)."""
    return batch.sub_(torch.tensor(mean).view(1, 3, 1, 1)).div_(torch.tensor(std).view(1, 3, 1, 1))


class SignalToImage:
    """Base class. Subclasses implement `magnitude` ((N, L) -> (N, F, T), rows = increasing frequency).

    Args:
        fs: sample rate the transform expects, in Hz.
        image_size: side of the square output image.
        floor_db: dynamic range kept below each image's peak (a negative number of dB).
        mean, std: per-channel normalisation of the network (the backbone's preprocessing).
        chunk: windows processed at a time (bounds memory).
    """

    kind: ClassVar[str] = ""
    has_frequency_axis: ClassVar[bool] = True  # rows are frequencies (CWT, STFT), not pixels

    def __init__(
        self,
        *,
        fs: float,
        image_size: int = 64,
        floor_db: float = -60.0,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        chunk: int = 32,
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        if floor_db >= 0:
            raise ValueError(f"floor_db must be negative (dB below the peak), got {floor_db}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {mean} and {std}")
        self.fs = float(fs)
        self.image_size = int(image_size)
        self.floor_db = float(floor_db)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.chunk = int(chunk)

    # ------------------------------------------------------------------ to implement
    def magnitude(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) float32 -> (N, F, T) non-negative magnitudes, row 0 the lowest frequency."""
        raise NotImplementedError

    def frequencies(self, n_samples: int) -> np.ndarray:
        """Centre frequency in Hz of each row of `magnitude` (for plots and checks)."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ shared
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this transform (JSON-serialisable)."""
        return {
            "kind": self.kind,
            "fs": self.fs,
            "image_size": self.image_size,
            "floor_db": self.floor_db,
            "mean": list(self.mean),
            "std": list(self.std),
            **self._settings(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def __call__(self, windows: np.ndarray) -> torch.Tensor:
        """Windows -> normalised network input.

        Args:
            windows: (N, L) or (N, C, L) with C in 1..3 sensors (1: grey replicated to RGB,
                2: R, G and their mean as B, 3: R, G, B).

        Returns:
            float32 tensor (N, 3, image_size, image_size).
        """
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3 or not 1 <= x.shape[1] <= 3:
            raise ValueError(f"windows must be (N, L) or (N, C<=3, L), got shape {x.shape}")
        n, c, length = x.shape
        out = torch.empty((n, 3, self.image_size, self.image_size), dtype=torch.float32)
        for start in range(0, n, self.chunk):
            part = x[start : start + self.chunk]
            grey = self._to_unit_image(part.reshape(-1, length))  # (n*c, S, S) in [0, 1]
            grey = grey.reshape(len(part), c, self.image_size, self.image_size)
            if c == 1:
                rgb = grey.expand(-1, 3, -1, -1)
            elif c == 2:
                rgb = torch.cat([grey, grey.mean(dim=1, keepdim=True)], dim=1)
            else:
                rgb = grey
            out[start : start + len(part)] = rgb
        return normalise(out, self.mean, self.std)

    def _to_unit_image(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, S, S): magnitude, resized (antialiased), in dB relative to the peak, in [0, 1]."""
        mag = self.magnitude(windows).to(torch.float32)
        mag = F.interpolate(mag[:, None], size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)[:, 0]
        db = 20 * torch.log10(mag.clamp_min(1e-12))
        db = db - db.amax(dim=(1, 2), keepdim=True)
        return (db.clamp_min(self.floor_db) - self.floor_db) / -self.floor_db
