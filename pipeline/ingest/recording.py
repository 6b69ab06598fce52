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
    """

    id: str
    label: str
    signal: np.ndarray
    fs: float
    condition: dict[str, float | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.signal.ndim != 2:
            raise ValueError(f"Recording {self.id}: signal must be (channels, samples), got shape {self.signal.shape}")

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[-1])
