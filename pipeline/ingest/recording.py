"""The unit of ingest: one continuous recording of one physical unit under one operating condition."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Recording:
    """A labelled multi-channel signal.

    Attributes:
        id: unique recording id; splits are made on it, never on windows.
        label: class name.
        signal: float32 array of shape (channels, samples).
        fs: sample rate in Hz.
        condition: operating condition (rpm, load, ...) and other per-recording facts.
        unit: the physical recording the split keeps together (default: `id`; a manifest's
            recording column can join several files, e.g. segments of one run).
        file_channels: how many channels the file it was read from had (0: as many as `signal`),
            so a prediction can tell a file like the training ones from a stack of windows.
    """

    id: str
    label: str
    signal: np.ndarray
    fs: float
    condition: dict[str, float | str] = field(default_factory=dict)
    unit: str = ""
    file_channels: int = 0

    def __post_init__(self) -> None:
        if not self.unit:
            object.__setattr__(self, "unit", self.id)
        if self.signal.ndim != 2:
            raise ValueError(
                f"Recording {self.id}: signal must be (channels, samples), got shape {self.signal.shape}"
            )

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[-1])
