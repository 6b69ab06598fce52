"""Cut recordings into (possibly overlapping) windows, keeping which recording each came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.ingest.recording import Recording
from signal2image.prepare import cut_windows, window_starts

__all__ = ["WindowSet", "cut_windows", "make_windows", "window_starts"]


@dataclass(frozen=True)
class WindowSet:
    """Windows of one split.

    Attributes:
        x: float32 (n_windows, channels, length).
        y: int64 class indices (n_windows,).
        recording: index into `recording_ids` for each window.
        recording_ids: ids of the recordings the windows came from.
        skipped: ids of recordings shorter than one window.
    """

    x: np.ndarray
    y: np.ndarray
    recording: np.ndarray
    recording_ids: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_windows(
    recordings: tuple[Recording, ...] | list[Recording], classes: list[str], length: int, hop: int
) -> WindowSet:
    """Windows of every recording, labelled with the index of the recording's class in `classes`."""
    xs, ys, owners, ids, skipped = [], [], [], [], []
    channels = recordings[0].signal.shape[0] if recordings else 1
    for rec in recordings:
        windows = cut_windows(rec.signal, length, hop)
        if len(windows) == 0:
            skipped.append(rec.id)
            continue
        xs.append(windows)
        ys.append(np.full(len(windows), classes.index(rec.label), dtype=np.int64))
        owners.append(np.full(len(windows), len(ids), dtype=np.int64))
        ids.append(rec.id)
    if not xs:
        return WindowSet(
            np.zeros((0, channels, length), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            (),
            tuple(skipped),
        )
    return WindowSet(
        np.concatenate(xs), np.concatenate(ys), np.concatenate(owners), tuple(ids), tuple(skipped)
    )
