"""Readers of one recording per file: CSV, NPY/NPZ, MATLAB .mat (v5 and v7.3, CWRU naming), WAV,
NI TDMS, Parquet. Each returns a `SignalFile`: (channels, samples) float32, channel names, and the
sample rate when the file carries one. UCR/UEA-style TSV files hold many recordings and have
their own reader, `read_ucr_tsv`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

SIGNAL_SUFFIXES = (".npy", ".npz", ".csv", ".mat", ".wav", ".tdms", ".parquet")
TIME_COLUMNS = ("time", "t", "time_s", "times", "timestamp", "seconds")
# CWRU bearing data: X097_DE_time, X097_FE_time, X097_BA_time and X097RPM.
CWRU_SIGNAL = re.compile(r"^X?\d+_(DE|FE|BA)_time$")
CWRU_RPM = re.compile(r"^X?\d+RPM$")


@dataclass(frozen=True)
class SignalFile:
    """One recording as read from disk."""

    data: np.ndarray  # float32 (channels, samples)
    channels: list[str]
    fs: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # e.g. rpm from a CWRU file

    def select(self, channel: int | str | tuple[int | str, ...], path: Path | str) -> np.ndarray:
        """Channels, by index or name, as (n_channels, samples): one, or a tuple of up to three.

        Raises:
            UserError: a channel does not exist (the message lists the available ones).
        """
        if isinstance(channel, (tuple, list)):
            return np.concatenate([self.select(c, path) for c in channel])
        if isinstance(channel, str) and not channel.isdigit():
            if channel not in self.channels:
                raise UserError(f"{path}: no channel {channel!r}; available channels: {self.channels}")
            index = self.channels.index(channel)
        else:
            index = int(channel)
            if index >= len(self.channels):
                raise UserError(
                    f"{path}: channel {index} requested but the file has "
                    f"{len(self.channels)} channel(s): {self.channels}"
                )
        return self.data[index : index + 1]


def read_signal_file(path: str | Path) -> SignalFile:
    """Read one recording, whatever its format (by suffix).

    Raises:
        UserError: the file is missing, unreadable, empty, not numeric, or holds NaN/Inf.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"signal file {str(file)!r} not found")
    suffix = file.suffix.lower()
    readers = {
        ".npy": _npy,
        ".npz": _npz,
        ".csv": _csv,
        ".mat": _mat,
        ".wav": _wav,
        ".tdms": _tdms,
        ".parquet": _parquet,
    }
    if suffix not in readers:
        raise UserError(
            f"{file}: unsupported signal file type {suffix!r}; use one of {list(SIGNAL_SUFFIXES)}"
        )
    try:
        signal = readers[suffix](file)
    except UserError:
        raise
    except Exception as exc:  # each library has its own errors for a damaged file
        raise UserError(f"{file}: cannot read the signal ({type(exc).__name__}: {exc})") from None
    data = signal.data
    if data.size == 0:
        raise UserError(f"{file}: the signal is empty")
    if not np.all(np.isfinite(data)):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise UserError(
            f"{file}: {bad} values are NaN or Inf; clean or interpolate them first, or set nan_policy: drop"
        )
    return signal


def _channels_first(data: np.ndarray, file: Path) -> np.ndarray:
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.number):
        raise UserError(f"{file}: the array holds {data.dtype} values, expected numbers")
    data = np.squeeze(data) if data.ndim > 2 else data
    if data.ndim == 1:
        data = data[None, :]
    elif data.ndim == 2:
        if data.shape[0] > data.shape[1]:
            data = data.T  # samples were rows
    else:
        raise UserError(f"{file}: expected a 1-D or 2-D array, got shape {data.shape}")
    return np.ascontiguousarray(data, dtype=np.float32)


def _named(data: np.ndarray, names: list[str] | None = None) -> list[str]:
    return names if names and len(names) == data.shape[0] else [f"ch{i}" for i in range(data.shape[0])]


def _npy(file: Path) -> SignalFile:
    data = _channels_first(np.load(file, allow_pickle=False), file)
    return SignalFile(data, _named(data))


def _npz(file: Path) -> SignalFile:
    with np.load(file, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    fs = float(arrays.pop("fs")) if "fs" in arrays and np.size(arrays["fs"]) == 1 else None
    if len(arrays) == 1:
        data = _channels_first(next(iter(arrays.values())), file)
        return SignalFile(data, _named(data), fs)
    series = {k: np.ravel(v) for k, v in arrays.items() if np.size(v) > 1}
    lengths = {len(v) for v in series.values()}
    if len(lengths) != 1:
        raise UserError(
            f"{file}: arrays {list(series)} have different lengths {sorted(lengths)}; "
            "store one array per file or equal-length channels"
        )
    return SignalFile(np.stack(list(series.values())).astype(np.float32), list(series), fs)


def _table(columns: list[str], values: np.ndarray, file: Path) -> SignalFile:
    """Columns of a CSV/Parquet table: a time column (if any) gives fs, the others are channels."""
    lowered = [c.strip().lower() for c in columns]
    fs = None
    keep = list(range(len(columns)))
    for i, name in enumerate(lowered):
        if name in TIME_COLUMNS:
            steps = np.diff(values[:, i].astype(np.float64))
            if len(steps) == 0 or np.median(steps) <= 0:
                raise UserError(f"{file}: time column {columns[i]!r} does not increase; fix it or remove it")
            fs = round(float(1.0 / np.median(steps)), 6)  # 1/0.000125 is 7999.999999999993
            keep.remove(i)
            break
    data = np.ascontiguousarray(values[:, keep].T, dtype=np.float32)
    return SignalFile(data, [columns[i].strip() for i in keep], fs)


def _csv(file: Path) -> SignalFile:
    with file.open("r", encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    delimiter = (
        ";"
        if first.count(";") > first.count(",")
        else ("\t" if first.count("\t") > first.count(",") else ",")
    )
    cells = [c.strip() for c in first.split(delimiter)]
    header = not all(_is_number(c) for c in cells if c)
    values = np.loadtxt(
        file,
        delimiter=delimiter,
        skiprows=1 if header else 0,
        dtype=np.float64,
        ndmin=2,
        encoding="utf-8-sig",
    )
    columns = cells if header else [f"ch{i}" for i in range(values.shape[1])]
    if len(columns) != values.shape[1]:
        raise UserError(f"{file}: the header has {len(columns)} columns but the rows have {values.shape[1]}")
    return _table(columns, values, file)


def _parquet(file: Path) -> SignalFile:
    import pandas as pd

    frame = pd.read_parquet(file)
    numeric = frame.select_dtypes("number")
    if numeric.shape[1] == 0:
        raise UserError(f"{file}: no numeric column; columns are {list(frame.columns)}")
    return _table([str(c) for c in numeric.columns], numeric.to_numpy(dtype=np.float64), file)


def _mat(file: Path) -> SignalFile:
    import h5py
    import scipy.io

    if h5py.is_hdf5(file):  # MATLAB v7.3 files are HDF5, arrays stored transposed
        with h5py.File(file, "r") as handle:
            variables = {
                k: np.asarray(handle[k]).T for k in handle.keys() if isinstance(handle[k], h5py.Dataset)
            }
    else:
        variables = {k: v for k, v in scipy.io.loadmat(file).items() if not k.startswith("__")}
    rpm = {k: float(np.ravel(v)[0]) for k, v in variables.items() if CWRU_RPM.match(k) and np.size(v) >= 1}
    cwru = {CWRU_SIGNAL.match(k).group(1): np.ravel(v) for k, v in variables.items() if CWRU_SIGNAL.match(k)}  # type: ignore[union-attr]
    if cwru:
        length = min(len(v) for v in cwru.values())
        names = [n for n in ("DE", "FE", "BA") if n in cwru]
        data = np.stack([cwru[n][:length] for n in names]).astype(np.float32)
        return SignalFile(data, names, None, {"rpm": next(iter(rpm.values()))} if rpm else {})
    series = {
        k: v
        for k, v in variables.items()
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number) and v.size > 1
    }
    fs = next(
        (
            float(np.ravel(v)[0])
            for k, v in variables.items()
            if k.lower() in ("fs", "samplerate", "sample_rate") and np.size(v) == 1
        ),
        None,
    )
    if not series:
        raise UserError(f"{file}: no numeric array found; variables are {sorted(variables)}")
    if len(series) == 1:
        name, values = next(iter(series.items()))
        data = _channels_first(values, file)
        return SignalFile(data, [name] if data.shape[0] == 1 else _named(data), fs)
    lengths = {np.size(v) for v in series.values()}
    if len(lengths) != 1:
        raise UserError(
            f"{file}: variables {sorted(series)} have different lengths; "
            "keep one signal per file or equal-length channels"
        )
    return SignalFile(np.stack([np.ravel(v) for v in series.values()]).astype(np.float32), list(series), fs)


def _wav(file: Path) -> SignalFile:
    from scipy.io import wavfile

    fs, data = wavfile.read(file)
    if data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128) / 128
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = (
        np.atleast_2d(np.asarray(data, dtype=np.float32).T)
        if data.ndim == 2
        else np.asarray(data, np.float32)[None, :]
    )
    return SignalFile(np.ascontiguousarray(data), _named(data), float(fs))


def _tdms(file: Path) -> SignalFile:
    from nptdms import TdmsFile

    tdms = TdmsFile.read(file)
    names, series, rates = [], [], set()
    for group in tdms.groups():
        for channel in group.channels():
            values = channel[:]
            if values.size and np.issubdtype(values.dtype, np.number):
                names.append(f"{group.name}/{channel.name}")
                series.append(np.asarray(values, dtype=np.float32))
                increment = channel.properties.get("wf_increment")
                if increment:
                    rates.add(round(1.0 / float(increment), 6))
    if not series:
        raise UserError(f"{file}: no numeric channel found")
    length = min(len(s) for s in series)
    if len(rates) > 1:
        raise UserError(
            f"{file}: channels have different sample rates {sorted(rates)} Hz; split them into separate files"
        )
    return SignalFile(np.stack([s[:length] for s in series]), names, rates.pop() if rates else None)


def read_ucr_tsv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """A UCR/UEA-style file: one series per row, the label first (tab, comma or space separated).

    Returns:
        labels (as strings) and a float32 array (n_series, length).

    Raises:
        UserError: unreadable, ragged, or NaN-holding files.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"UCR file {str(file)!r} not found")
    try:
        table = np.loadtxt(
            file, delimiter="\t" if "\t" in file.open().readline() else None, dtype=np.float64, ndmin=2
        )
    except ValueError as exc:
        raise UserError(f"{file}: not a UCR table of numbers ({exc})") from None
    if table.shape[1] < 2:
        raise UserError(f"{file}: each row needs a label and at least one value")
    if not np.all(np.isfinite(table)):
        raise UserError(
            f"{file}: NaN values (variable-length series are padded with NaN); use an equal-length data set"
        )
    labels = [f"{v:g}" for v in table[:, 0]]
    return labels, np.ascontiguousarray(table[:, 1:], dtype=np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
