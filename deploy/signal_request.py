"""One preparation of a signal request, used by `pipeline predict`, the service and the benchmarks.

A request is a whole signal (channels x samples) at some sample rate. It becomes the model's
windows exactly as the training recordings did: the model's channels picked, the rate checked (or
resampled), the signal z-scored as one recording when the model was trained so, and cut with the
model's window and hop. Every refusal is a `RequestError` naming the request field at fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deploy.metadata import ModelMetadata
from signal2image.errors import UserError
from signal2image.prepare import cut_windows, resample, zscore

MAX_RESAMPLE_FACTOR = 16


class RequestError(UserError):
    """A request the model cannot take: `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def select_channels(
    signal: np.ndarray,
    wanted: Sequence[int | str],
    names: Sequence[str] | None = None,
    file_channels: int | None = None,
) -> np.ndarray:
    """(channels, samples) -> the model's channels `wanted`, in its order.

    The rule, in order: channels the model names are picked by name from a file that has them
    (`names`); a signal with exactly the model's number of channels is taken as it is (the sender
    picked them); a wider one gives the model's channels by index only when it has as many channels
    as the model's training files had (`file_channels`, from the metadata). Anything else is
    refused rather than guessed: a (16, 4096) array may be 16 sensors or 16 stacked windows.

    Raises:
        RequestError: (field ``data``) the signal has neither the model's channels nor their number.
    """
    n = signal.shape[0]
    by_name = names is not None and any(isinstance(c, str) for c in wanted)
    if by_name and all(c in names if isinstance(c, str) else c < n for c in wanted):  # type: ignore[operator]
        return signal[[list(names).index(c) if isinstance(c, str) else c for c in wanted]]  # type: ignore[arg-type]
    if n == len(wanted):
        return signal
    indices = [c for c in wanted if isinstance(c, int)]
    if len(indices) == len(wanted) and max(indices) < n and n == file_channels:
        return signal[indices]
    named = f" (the file's channels: {list(names)})" if names is not None else ""
    trained = f" of {file_channels}-channel recordings" if file_channels else ""
    raise RequestError(
        "data",
        f"the signal has {n} channel(s){named}; the model reads {len(wanted)} channel(s) {list(wanted)}"
        f"{trained}: send exactly those (rows of separate windows or recordings go in separate requests)",
    )


def prepare_signal(
    meta: ModelMetadata,
    signal: np.ndarray,
    fs: float | None,
    *,
    resample_rate: bool = False,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """A request's signal -> the model's windows (n, channels, window_length), float32.

    Args:
        meta: the served model's metadata (window, hop, sample rate, channels, normalisation).
        signal: (samples,) or (channels, samples).
        fs: the signal's sample rate in Hz (None: taken to be the model's).
        resample_rate: resample a signal at another rate (polyphase, at most a factor of 16)
            instead of refusing it.
        names: the channel names of the file the signal came from, if any.

    Raises:
        RequestError: wrong channels (``data``), another rate (``fs``), too short (``data``).
    """
    if meta.is_image or meta.fs is None or meta.window_length is None or meta.window_hop is None:
        raise RequestError("path", "this model classifies images, not signals")
    signal = np.atleast_2d(np.asarray(signal, dtype=np.float32))
    signal = select_channels(signal, meta.channels, names, meta.file_channels)
    if fs is not None and abs(fs - meta.fs) > 1e-6 * meta.fs:
        if not resample_rate:
            raise RequestError(
                "fs",
                f"the signal is sampled at {fs:g} Hz; this model expects {meta.fs:g} Hz "
                "(resample it, or serve with --resample)",
            )
        if not 1 / MAX_RESAMPLE_FACTOR <= meta.fs / fs <= MAX_RESAMPLE_FACTOR:
            raise RequestError(
                "fs",
                f"the signal is sampled at {fs:g} Hz; resampling to {meta.fs:g} Hz is limited to a "
                f"factor of {MAX_RESAMPLE_FACTOR} either way",
            )
        signal = resample(signal, fs, meta.fs)
    if signal.shape[-1] < meta.window_length:
        raise RequestError(
            "data",
            f"the signal has {signal.shape[-1]} samples per channel; this model needs at least one "
            f"window of {meta.window_length} samples at {meta.fs:g} Hz",
        )
    if meta.transform.get("signal_norm") == "recording":  # the request's signal is the recording
        peak = float(np.max(np.abs(signal)))
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, not warned
            signal = zscore(signal)
        if not np.isfinite(signal).all():
            raise RequestError(
                "data",
                f"z-scoring the signal gave non-finite values (its amplitude reaches {peak:.3g}, beyond "
                "what float32 arithmetic can scale); send values in physical units",
            )
    return cut_windows(signal, meta.window_length, meta.window_hop)


def probabilities(classes: Sequence[str], probs: np.ndarray) -> dict[str, float]:
    """One probability vector as {class: probability}."""
    return {c: float(p) for c, p in zip(classes, probs)}
