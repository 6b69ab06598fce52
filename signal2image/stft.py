"""Short-time Fourier transform spectrogram."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from signal2image.base import SignalToImage

_WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window, "blackman": torch.blackman_window}


class StftTransform(SignalToImage):
    """|STFT| with a `window` of `nperseg` samples every `hop` samples (no padding at the edges).

    Args:
        nperseg: segment length in samples.
        hop: samples between segments.
        window: ``hann``, ``hamming`` or ``blackman`` (periodic, as scipy's default).
        **kwargs: see `SignalToImage`.
    """

    kind = "stft"

    def __init__(self, *, nperseg: int = 256, hop: int = 32, window: str = "hann", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if window not in _WINDOWS:
            raise ValueError(f"window {window!r} is not supported; use one of {sorted(_WINDOWS)}")
        if nperseg < 8 or hop < 1:
            raise ValueError(f"need nperseg >= 8 and hop >= 1, got nperseg={nperseg}, hop={hop}")
        self.nperseg = int(nperseg)
        self.hop = int(hop)
        self.window = window
        self.window_ = _WINDOWS[window](self.nperseg, periodic=True)

    def _settings(self) -> dict[str, Any]:
        return {"nperseg": self.nperseg, "hop": self.hop, "window": self.window}

    def frequencies(self, n_samples: int) -> np.ndarray:
        """The ``nperseg // 2 + 1`` FFT bin frequencies in Hz, from 0 up to fs/2 (whatever `n_samples`)."""
        return np.fft.rfftfreq(self.nperseg, d=1 / self.fs)

    def magnitude(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, nperseg // 2 + 1, frames) |STFT|, ``frames = 1 + (L - nperseg) // hop``.

        Raises:
            ValueError: the windows are shorter than `nperseg`.
        """
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        if x.shape[-1] < self.nperseg:
            raise ValueError(f"windows of {x.shape[-1]} samples are shorter than nperseg={self.nperseg}")
        # A strided view of the frames and one batched real FFT: what torch.stft computes without
        # padding, with less overhead (frames are never copied before the multiply).
        frames = x.unfold(-1, self.nperseg, self.hop) * self.window_  # (N, frames, nperseg)
        return torch.fft.rfft(frames).abs().transpose(1, 2)  # (N, nperseg//2 + 1, frames)
