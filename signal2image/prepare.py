"""Raw-signal preparation shared by training and serving: windows, resampling, the Nyquist rule.

Training (`pipeline.ingest`) and serving (`deploy`) both cut and resample with these functions,
so a request is prepared exactly as the training recordings were.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def window_starts(n_samples: int, length: int, hop: int) -> np.ndarray:
    """Start indices of all complete windows."""
    if n_samples < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - length + 1, hop, dtype=np.int64)


def cut_windows(signal: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(channels, samples) -> (n_windows, channels, length), a copy."""
    starts = window_starts(signal.shape[-1], length, hop)
    if len(starts) == 0:
        return np.zeros((0, signal.shape[0], length), dtype=signal.dtype)
    view = np.lib.stride_tricks.sliding_window_view(signal, length, axis=-1)  # (C, n, L)
    return np.ascontiguousarray(view[:, starts].transpose(1, 0, 2))


def resample(signal: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """Polyphase resampling of (channels, samples) from `fs_from` to `fs_to` Hz."""
    from scipy.signal import resample_poly

    ratio = Fraction(fs_to / fs_from).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def nyquist_problem(f_max: float, fs: float, field: str) -> str | None:
    """The message when `f_max` lies above the Nyquist frequency of `fs`, else None.

    The one statement of the rule: the config schema, the data preparation and the CWT transform
    all ask it.
    """
    if f_max > fs / 2:
        return (
            f"{field} = {f_max:g} Hz is above the Nyquist frequency fs/2 = {fs / 2:g} Hz of the data "
            f"(sampled at {fs:g} Hz); lower it to at most {fs / 2:g}"
        )
    return None


def zscore(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation along the last axis (a constant stays 0)."""
    x = np.asarray(x, dtype=np.float32)
    centred = x - x.mean(axis=-1, keepdims=True)
    std = centred.std(axis=-1, keepdims=True)
    return (centred / np.where(std > 0, std, 1)).astype(np.float32)
