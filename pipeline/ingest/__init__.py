"""Ingest: sources of recordings, leakage-safe splits, windowing."""

from __future__ import annotations

from pipeline.config import DataConfig
from pipeline.ingest.recording import Recording


def load_recordings(config: DataConfig) -> list[Recording]:
    """The recordings of the configured source."""
    if config.source == "folder":
        from pipeline.ingest.folder import read_folder

        assert config.folder is not None  # checked by the schema
        return read_folder(config.folder)
    from pipeline.ingest.simulator import GearboxSimulator

    return GearboxSimulator(config.simulator).recordings()
