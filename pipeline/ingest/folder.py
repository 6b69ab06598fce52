"""One's own recordings laid out as `root/<label>/<file>`: one file is one recording."""

from __future__ import annotations

from pipeline.config import FolderConfig
from pipeline.errors import UserError
from pipeline.ingest.files import SIGNAL_SUFFIXES, read_signal_file
from pipeline.ingest.recording import Recording


def read_folder(config: FolderConfig) -> list[Recording]:
    """Read every signal file below `config.path`, labelled by its folder name.

    Raises:
        UserError: the folder is missing or holds fewer than two classes, or a file is unreadable
            or lacks the configured channel.
    """
    root = config.path
    if not root.is_dir():
        raise UserError(f"data.folder.path: {str(root)!r} is not a folder; it must hold one sub-folder per class")
    recordings: list[Recording] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in SIGNAL_SUFFIXES)
        if not files:
            raise UserError(f"class {class_dir.name!r} ({class_dir}) holds no signal file ({', '.join(SIGNAL_SUFFIXES)}); add recordings or remove the folder")
        for file in files:
            signal = read_signal_file(file)
            if config.channel >= signal.shape[0]:
                raise UserError(
                    f"{file}: data.folder.channel = {config.channel} but the file has {signal.shape[0]} "
                    f"channel(s); use a channel below {signal.shape[0]}"
                )
            recordings.append(
                Recording(
                    id=str(file.relative_to(root)),
                    label=class_dir.name,
                    signal=signal[config.channel : config.channel + 1],
                    fs=config.fs,
                    condition={"file": str(file)},
                )
            )
    labels = sorted({r.label for r in recordings})
    if len(labels) < 2:
        raise UserError(
            f"data.folder.path: {str(root)!r} holds signal files ({', '.join(SIGNAL_SUFFIXES)}) for "
            f"{len(labels)} class(es) {labels}; it needs a sub-folder per class, at least two"
        )
    return recordings
