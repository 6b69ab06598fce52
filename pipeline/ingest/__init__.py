"""Ingest: the data sources (simulator, folder or manifest of files, UCR, images), leakage-safe
splits of whole recordings or parts, and windowing.

`load_recordings` picks the signal source the config names.
"""

from __future__ import annotations

from pipeline.config import DataConfig
from pipeline.ingest.recording import Recording


def load_recordings(config: DataConfig, report: dict[str, list[str]] | None = None) -> list[Recording]:
    """The recordings of the configured source (`report` receives files dropped for NaN/Inf)."""
    if config.source == "folder":
        from pipeline.ingest.folder import read_folder

        assert config.folder is not None  # checked by the schema
        return read_folder(config.folder, report)
    if config.source == "ucr":
        from pipeline.ingest.ucr import read_ucr

        return read_ucr(config.ucr)
    from pipeline.ingest.simulator import GearboxSimulator

    return GearboxSimulator(config.simulator).recordings()
