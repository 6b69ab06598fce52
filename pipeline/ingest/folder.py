"""One's own recordings laid out as `root/<label>/<file>`: one file is one recording."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from pipeline.config import FolderConfig
from pipeline.errors import UserError
from pipeline.ingest.files import SIGNAL_SUFFIXES, read_signal_file
from pipeline.ingest.recording import Recording


def resample(signal: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """Polyphase resampling of (channels, samples) from `fs_from` to `fs_to` Hz."""
    ratio = Fraction(fs_to / fs_from).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def read_folder(config: FolderConfig, report: dict[str, list[str]] | None = None) -> list[Recording]:
    """Read every signal file below `config.path`, labelled by its folder name.

    Args:
        config: folder, sample rate (or None: from the files), channel, NaN policy, resampling.
        report: filled with the files dropped for NaN/Inf (``nan_dropped``) when the policy is drop.

    Raises:
        UserError: the folder is missing or holds fewer than two classes, a class folder is empty,
            a file is unreadable, lacks the channel or the sample rate, or has another rate.
    """
    root = config.path
    if not root.is_dir():
        raise UserError(f"data.folder.path: {str(root)!r} is not a folder; it must hold one sub-folder per class")
    recordings: list[Recording] = []
    dropped: list[str] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in SIGNAL_SUFFIXES)
        if not files:
            raise UserError(f"class {class_dir.name!r} ({class_dir}) holds no signal file ({', '.join(SIGNAL_SUFFIXES)}); add recordings or remove the folder")
        for file in files:
            try:
                loaded = read_signal_file(file)
            except UserError as exc:
                if config.nan_policy == "drop" and "NaN or Inf" in str(exc):
                    dropped.append(str(file))
                    continue
                raise
            signal = loaded.select(config.channel, file)
            fs = config.fs or loaded.fs
            if fs is None:
                raise UserError(f"{file}: the file carries no sample rate; set data.folder.fs (Hz)")
            if config.fs and loaded.fs and abs(loaded.fs - config.fs) > 1e-6 * config.fs:
                if not config.resample:
                    raise UserError(
                        f"{file}: sampled at {loaded.fs:g} Hz but data.folder.fs is {config.fs:g} Hz; "
                        "set data.folder.resample: true to resample it, or fix fs"
                    )
                signal = resample(signal, loaded.fs, config.fs)
            recordings.append(
                Recording(
                    id=str(file.relative_to(root)),
                    label=class_dir.name,
                    signal=signal,
                    fs=float(fs),
                    condition={"file": str(file), **loaded.extra},
                )
            )
    if report is not None:
        report["nan_dropped"] = dropped
    labels = sorted({r.label for r in recordings})
    if len(labels) < 2:
        raise UserError(
            f"data.folder.path: {str(root)!r} holds signal files ({', '.join(SIGNAL_SUFFIXES)}) for "
            f"{len(labels)} class(es) {labels}; it needs a sub-folder per class, at least two"
        )
    rates = sorted({r.fs for r in recordings})
    if len(rates) > 1:
        raise UserError(f"the files have different sample rates {rates} Hz; set data.folder.fs and data.folder.resample: true")
    return recordings
