"""One's own recordings, one file per recording, described by a folder per class
(`root/<label>/<file>`) or by a manifest CSV (path, label and optional recording, channel(s), fs,
rpm, load, split and any other condition column)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import FolderConfig
from pipeline.errors import UserError
from pipeline.ingest.files import SIGNAL_SUFFIXES, read_signal_file
from pipeline.ingest.manifest import read_manifest
from pipeline.ingest.recording import Recording
from signal2image.prepare import resample

MANIFEST_COLUMNS = "recording, channel(s), fs, rpm, load, split"


def _folder_entries(root: Path) -> list[tuple[Path, str, dict[str, str]]]:
    if not root.is_dir():
        raise UserError(
            f"data.folder.path: {str(root)!r} is not a folder; it must hold one sub-folder per class"
        )
    entries = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in SIGNAL_SUFFIXES)
        if not files:
            raise UserError(
                f"class {class_dir.name!r} ({class_dir}) holds no signal file "
                f"({', '.join(SIGNAL_SUFFIXES)}); add recordings or remove the folder"
            )
        entries += [(file, class_dir.name, {"id": str(file.relative_to(root))}) for file in files]
    return entries


def _manifest_entries(manifest: Path) -> list[tuple[Path, str, dict[str, str]]]:
    entries = []
    for row in read_manifest(manifest, "data.folder.manifest", MANIFEST_COLUMNS):
        if not row.path.is_file():
            raise UserError(
                f"{manifest}, line {row.line}: signal file {str(row.path)!r} not found; fix the path "
                "(relative paths start at the manifest's folder)"
            )
        cells = {k: v for k, v in row.cells.items() if v and k not in ("path", "label")}
        cells["id"] = row.name
        cells["line"] = f"{manifest}, line {row.line}"
        entries.append((row.path, row.label, cells))
    return entries


def _rate(cells: dict[str, str], where: str) -> float | None:
    if not cells.get("fs"):
        return None
    try:
        fs = float(cells["fs"])
    except ValueError:
        fs = -1.0
    if not fs > 0:
        raise UserError(
            f"{where}: fs {cells['fs']!r} is not a sample rate; write it in Hz as a positive number (12800, "
            "not 12.8k)"
        )
    return fs


def _number(cells: dict[str, str], key: str) -> float | str:
    try:
        return float(cells[key])
    except ValueError:
        return cells[key]


def read_folder(config: FolderConfig, report: dict[str, list[str]] | None = None) -> list[Recording]:
    """Read every recording the folder or the manifest names.

    Args:
        config: folder or manifest, sample rate (or None: from the files or the manifest), channel(s),
            NaN policy, resampling.
        report: filled with the files dropped for NaN/Inf (``nan_dropped``) when the policy is drop.

    Raises:
        UserError: the folder or manifest is missing or names fewer than two classes, a class folder
            is empty, a file is unreadable, lacks the channel or the sample rate, or has another rate.
    """
    entries = _manifest_entries(config.manifest) if config.manifest else _folder_entries(config.path)  # type: ignore[arg-type]
    source = str(config.manifest or config.path)
    recordings: list[Recording] = []
    dropped: list[str] = []
    for file, label, cells in entries:
        where = cells.get("line", str(file))
        try:
            loaded = read_signal_file(file)
        except UserError as exc:
            if config.nan_policy == "drop" and "NaN or Inf" in str(exc):
                dropped.append(str(file))
                continue
            raise
        channel: int | str | tuple[int | str, ...] = config.channel
        if cells.get("channels") or cells.get("channel"):  # the manifest's own channel(s) for this file
            names = [
                c.strip()
                for c in (cells.get("channels") or cells["channel"]).replace(";", "|").split("|")
                if c.strip()
            ]
            channel = tuple(int(c) if c.isdigit() else c for c in names)
            if len(channel) != len(
                config.channels
            ):  # the model's metadata and the service use the config's count
                raise UserError(
                    f"{where}: the manifest selects {len(channel)} channel(s) {list(channel)} but "
                    "data.folder.channel has "
                    f"{len(config.channels)} {list(config.channels)}; give data.folder.channel the same "
                    "number of channels (the model's inputs)"
                )
        signal = loaded.select(channel, file)
        declared = _rate(cells, where)
        file_fs = loaded.fs or declared
        fs = config.fs or file_fs
        if fs is None:
            raise UserError(
                f"{where}: {file} carries no sample rate; set data.folder.fs "
                f"(Hz){' or the manifest fs column' if config.manifest else ''}"
            )
        if config.fs and file_fs and abs(file_fs - config.fs) > 1e-6 * config.fs:
            if not config.resample:
                raise UserError(
                    f"{where}: {file} is sampled at {file_fs:g} Hz but data.folder.fs is {config.fs:g} Hz; "
                    "set data.folder.resample: true to resample it, or fix fs"
                )
            signal = resample(signal, file_fs, config.fs)
        condition: dict[str, float | str] = {"file": str(file), **loaded.extra}
        condition.update(
            {
                k: _number(cells, k)
                for k in cells
                if k not in ("id", "line", "channel", "channels", "fs", "recording")
            }
        )
        recordings.append(
            Recording(
                id=cells["id"],
                label=label,
                signal=signal,
                fs=float(fs),
                condition=condition,
                unit=cells.get("recording", ""),
                file_channels=int(loaded.data.shape[0]),
            )
        )
    if report is not None:
        report["nan_dropped"] = dropped
    labels = sorted({r.label for r in recordings})
    if len(labels) < 2:
        key = "data.folder.manifest" if config.manifest else "data.folder.path"
        raise UserError(
            f"{key}: {source!r} gives readable recordings of {len(labels)} class(es) {labels}; at least two "
            "classes are needed"
        )
    channels = sorted({r.signal.shape[0] for r in recordings})
    if len(channels) > 1:
        raise UserError(
            f"{source}: the recordings have different numbers of channels {channels}; select the same "
            "channels for every file (data.folder.channel or the manifest's channels column)"
        )
    rates = sorted({r.fs for r in recordings})
    if rates[-1] - rates[0] > 1e-6 * rates[-1]:
        raise UserError(
            f"the files have different sample rates {rates} Hz; set data.folder.fs and data.folder.resample: "
            "true"
        )
    return recordings
