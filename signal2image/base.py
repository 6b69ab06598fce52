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

from signal2image.prepare import zscore

SIGNAL_NORMS = ("none", "window", "recording")
__all__ = ["SIGNAL_NORMS", "SignalToImage", "channel_stats", "check_stats", "normalise", "zscore"]


def normalise(batch: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> the network's input scale, per channel (in place)."""
    c = len(mean)
    return batch.sub_(torch.tensor(mean).view(1, c, 1, 1)).div_(torch.tensor(std).view(1, c, 1, 1))


def channel_stats(unit_images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, C, H, W) images in [0, 1] (std at least 1e-3)."""
    x = unit_images.to(torch.float64).transpose(0, 1).reshape(unit_images.shape[1], -1)
    return tuple(float(m) for m in x.mean(1)), tuple(max(float(v), 1e-3) for v in x.std(1))


def check_stats(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> None:
    """Check that `channels` is 1 or 3 and that `mean` and `std` hold one value per channel.

    Raises:
        ValueError: naming the wrong setting.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need {channels} value(s), one per output channel, got {list(mean)} and {list(std)}"
        )


class SignalToImage:
    """Base class. Subclasses implement `magnitude` ((N, L) -> (N, F, T), rows = increasing frequency).

    Args:
        fs: sample rate the transform expects, in Hz.
        image_size: side of the square output image.
        floor_db: dynamic range kept below the reference level (a negative number of dB).
        mean, std: per-channel normalisation of the network (the backbone's, or fitted by `fit`).
        chunk: windows processed at a time (bounds memory).
        channels: 3 (sensors to R, G, B; one sensor replicated) or 1 (one grey channel, for a
            backbone whose first convolution was adapted to one input).
        signal_norm: ``none``, ``window`` (z-score each window here) or ``recording`` (the caller
            z-scores each recording before cutting windows: `zscore`).
        level_db: None: dB relative to each image's own peak; a number: relative to this fixed
            level (fitted on the training split by `fit`), so absolute energy stays visible.
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
        channels: int = 3,
        signal_norm: str = "none",
        level_db: float | None = None,
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        if floor_db >= 0:
            raise ValueError(f"floor_db must be negative (dB below the peak), got {floor_db}")
        check_stats(tuple(mean), tuple(std), channels)
        if signal_norm not in SIGNAL_NORMS:
            raise ValueError(f"signal_norm must be one of {list(SIGNAL_NORMS)}, got {signal_norm!r}")
        self.channels = int(channels)
        self.signal_norm = signal_norm
        self.level_db = None if level_db is None else float(level_db)
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
            "channels": self.channels,
            "signal_norm": self.signal_norm,
            "level_db": self.level_db,
            **self._settings(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def __call__(self, windows: np.ndarray) -> torch.Tensor:
        """Windows -> normalised network input.

        Args:
            windows: (N, L) or (N, C, L) with C in 1..3 sensors (1: grey replicated to RGB,
                2: R, G and their mean as B, 3: R, G, B; with ``channels=1`` only one sensor).

        Returns:
            float32 tensor (N, channels, image_size, image_size).
        """
        return normalise(self.unit_images(windows), self.mean, self.std)

    def unit_images(self, windows: np.ndarray) -> torch.Tensor:
        """Windows -> (N, channels, S, S) in [0, 1], before the mean/std normalisation."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3 or not 1 <= x.shape[1] <= 3:
            raise ValueError(f"windows must be (N, L) or (N, C<=3, L), got shape {x.shape}")
        n, c, length = x.shape
        if self.channels == 1 and c != 1:
            raise ValueError(
                f"this transform makes one-channel images and takes one sensor, got {c} channels"
            )
        if self.signal_norm == "window":
            x = zscore(x)
        out = torch.empty((n, self.channels, self.image_size, self.image_size), dtype=torch.float32)
        for start in range(0, n, self.chunk):
            part = x[start : start + self.chunk]
            grey = self._to_unit_image(part.reshape(-1, length))  # (n*c, S, S) in [0, 1]
            grey = grey.reshape(len(part), c, self.image_size, self.image_size)
            if c == self.channels:
                rgb = grey
            elif c == 1:
                rgb = grey.expand(-1, 3, -1, -1)
            else:
                rgb = torch.cat([grey, grey.mean(dim=1, keepdim=True)], dim=1)
            out[start : start + len(part)] = rgb
        return out

    def fit(
        self, windows: np.ndarray, *, level: bool, stats: bool, max_windows: int = 2048, seed: int = 0
    ) -> None:
        """Fit the dB reference level (`level`) and/or the channel mean/std (`stats`) on training windows.

        The level is the 99.9th percentile of the training images' dB values; at most
        `max_windows` windows (a seeded sample) are used.
        """
        x = np.asarray(windows)
        if len(x) > max_windows:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_windows, replace=False))]
        if level:
            if not self.has_frequency_axis:
                raise ValueError(
                    f"a fitted dB level needs a time-frequency transform (cwt, stft), not {self.kind!r}"
                )
            db = torch.cat(
                [
                    self._db(self._prepared(x[i : i + self.chunk]).reshape(-1, x.shape[-1]))
                    for i in range(0, len(x), self.chunk)
                ]
            )
            self.level_db = float(torch.quantile(db.flatten()[:: max(1, db.numel() // 4_000_000)], 0.999))
        if stats:
            self.mean, self.std = channel_stats(self.unit_images(x))

    def _prepared(self, windows: np.ndarray) -> np.ndarray:
        return zscore(windows) if self.signal_norm == "window" else np.asarray(windows, dtype=np.float32)

    def image_magnitude(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, S, S): the magnitude resized (antialiased bilinear) to the image."""
        mag = self.magnitude(windows).to(torch.float32)
        return F.interpolate(
            mag[:, None],
            size=(self.image_size, self.image_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[:, 0]

    def _db(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, S, S): `image_magnitude` in dB."""
        return 20 * torch.log10(self.image_magnitude(windows).clamp_min(1e-12))

    def _to_unit_image(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, S, S) in [0, 1]: dB relative to the image's peak (or the fitted level), floored."""
        db = self._db(windows)
        db = db - (db.amax(dim=(1, 2), keepdim=True) if self.level_db is None else self.level_db)
        return (db.clamp(self.floor_db, 0) - self.floor_db) / -self.floor_db
