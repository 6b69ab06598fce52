"""Readers of signal files (NPY, NPZ, CSV) into (channels, samples) float32 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import UserError

SIGNAL_SUFFIXES = (".npy", ".npz", ".csv")


def read_signal_file(path: str | Path) -> np.ndarray:
    """Read one recording.

    NPY/NPZ: a 1-D array is one channel; a 2-D array is read with the longer axis as time.
    CSV: one column per channel, an optional header row.

    Returns:
        float32 array of shape (channels, samples).

    Raises:
        UserError: the file is missing, unreadable, empty, not numeric, or holds NaN/Inf.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"signal file {str(file)!r} not found")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(file, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise UserError(f"{file}: an NPZ signal file must hold one array, it holds {archive.files}")
                data = archive[archive.files[0]]
        elif suffix == ".csv":
            data = _read_csv(file)
        else:
            raise UserError(f"{file}: unsupported signal file type {suffix!r}; use one of {list(SIGNAL_SUFFIXES)}")
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"{file}: cannot read the signal ({exc})") from None
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.number):
        raise UserError(f"{file}: the array holds {data.dtype} values, expected numbers")
    if data.ndim == 1:
        data = data[None, :]
    elif data.ndim == 2:
        if data.shape[0] > data.shape[1]:
            data = data.T  # samples were rows
    else:
        raise UserError(f"{file}: expected a 1-D or 2-D array, got shape {data.shape}")
    if data.size == 0:
        raise UserError(f"{file}: the signal is empty")
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise UserError(f"{file}: {bad} values are NaN or Inf; clean or interpolate them first")
    return data.astype(np.float32, copy=False)


def _read_csv(file: Path) -> np.ndarray:
    with file.open("r", encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    delimiter = ";" if first.count(";") > first.count(",") else ","
    cells = [c.strip() for c in first.split(delimiter)]
    skip = 0 if all(_is_number(c) for c in cells if c) else 1
    data = np.loadtxt(file, delimiter=delimiter, skiprows=skip, dtype=np.float64, ndmin=2)
    return data


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
