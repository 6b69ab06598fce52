"""On-disk cache of prepared signal data: windows and network inputs as memory-mapped .npy files.

The key is a hash of what determines the result: the data section of the config, the identity of
the source files (path, size, modification time), the transform's own description, and the
version of the code that generates or reads the data. A second `pipeline run` with the same data
and transform maps the arrays instead of reading, simulating and transforming again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pipeline
import signal2image
from pipeline.config import JobConfig
from pipeline.ingest.split import SPLIT_NAMES, Split
from pipeline.ingest.windows import WindowSet

CODE_FILES = (
    "ingest/simulator.py",
    "ingest/files.py",
    "ingest/folder.py",
    "ingest/manifest.py",
    "ingest/ucr.py",
    "ingest/windows.py",
    "ingest/split.py",
    "data.py",
    "cache.py",  # the entry format (units keep their conditions since the drift reference needs them)
)


@dataclass(frozen=True)
class Unit:
    """A recording as the cached split remembers it: id, label and its operating condition (the JSON
    scalars of it: rpm, load, ...; the drift reference needs them on a cache hit too)."""

    id: str
    label: str
    condition: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _json_condition(condition: Any) -> dict[str, Any]:
    """The JSON scalars of a recording's condition (numpy numbers as Python ones)."""
    out: dict[str, Any] = {}
    for key, value in dict(condition or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[str(key)] = value
    return out


def _files_identity(cfg: JobConfig) -> list[list[Any]]:
    paths: list[Path] = []
    folder = cfg.data.folder
    if cfg.data.source == "folder" and folder and folder.manifest:
        from pipeline.ingest.manifest import read_manifest

        rows = read_manifest(folder.manifest, "data.folder.manifest", "") if folder.manifest.is_file() else []
        paths = [folder.manifest, *sorted({r.path for r in rows if r.path.is_file()})]
    elif cfg.data.source == "folder" and folder and folder.path:
        paths = sorted(p for p in folder.path.rglob("*") if p.is_file())
    elif cfg.data.source == "ucr":
        from pipeline.ingest.ucr import ucr_files

        paths = list(ucr_files(cfg.data.ucr))
    out = []
    for p in paths:
        if not p.is_file():  # missing: the reader refuses it next, naming the key (not a traceback here)
            continue
        stat = p.stat()
        out.append([str(p.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def cache_key(cfg: JobConfig, transform_spec: dict[str, Any]) -> str:
    """Hash of the data config, the source files' identity, the transform and the ingest code."""
    code = hashlib.sha256()
    root = Path(pipeline.__file__).parent
    for name in CODE_FILES:
        code.update((root / name).read_bytes())
    for file in sorted(Path(signal2image.__file__).parent.glob("*.py")):  # the transforms
        code.update(file.read_bytes())
    payload = {
        "data": cfg.data.model_dump(mode="json", exclude={"cache", "cache_dir"}),
        "files": _files_identity(cfg),
        "transform": transform_spec,
        "code": code.hexdigest(),
        "version": pipeline.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def save(
    folder: Path,
    classes: list[str],
    split: Split,
    windows: dict[str, WindowSet],
    images: dict[str, torch.Tensor],
    skipped: list[tuple[str, str]],
    transform: dict[str, Any],
    window: dict[str, int],
    conditions: dict[str, Any],
    *,
    file_channels: int | None = None,
) -> None:
    """Write the prepared data atomically (a half-written entry is never found).

    `transform` is the transform's `to_dict()`, fitted statistics included.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        meta: dict[str, Any] = {
            "classes": classes,
            "skipped": skipped,
            "transform": transform,
            "window": window,
            "conditions": conditions,
            "file_channels": file_channels,
            "splits": {},
        }
        for name in SPLIT_NAMES:
            ws = windows[name]
            np.save(tmp / f"{name}_x.npy", ws.x)
            np.save(tmp / f"{name}_images.npy", images[name].numpy())
            np.save(tmp / f"{name}_y.npy", ws.y)
            np.save(tmp / f"{name}_recording.npy", ws.recording)
            meta["splits"][name] = {
                "recording_ids": list(ws.recording_ids),
                "skipped": list(ws.skipped),
                "units": [
                    [u.id, u.label, _json_condition(getattr(u, "condition", None))]
                    for u in split.parts()[name]
                ],
            }
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(
    folder: Path,
) -> (
    tuple[
        list[str],
        Split,
        dict[str, WindowSet],
        dict[str, torch.Tensor],
        list[tuple[str, str]],
        dict[str, Any],
        dict[str, int],
        dict[str, Any],
        int | None,
    ]
    | None
):
    """The cached data, memory-mapped (copy-on-write), or None when there is no complete entry."""
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    windows, images, parts = {}, {}, {}
    for name in SPLIT_NAMES:
        info = meta["splits"][name]

        def arr(kind: str, name: str = name) -> np.ndarray:
            return np.load(folder / f"{name}_{kind}.npy", mmap_mode="c")

        windows[name] = WindowSet(
            arr("x"),
            np.asarray(arr("y")),
            np.asarray(arr("recording")),
            tuple(info["recording_ids"]),
            tuple(info["skipped"]),
        )
        images[name] = torch.from_numpy(arr("images"))
        # An entry written before conditions were kept has [id, label] only.
        parts[name] = tuple(
            Unit(unit[0], unit[1], dict(unit[2]) if len(unit) > 2 else {}) for unit in info["units"]
        )
    return (
        meta["classes"],
        Split(**parts),
        windows,
        images,
        [tuple(s) for s in meta["skipped"]],
        meta["transform"],
        meta["window"],
        meta["conditions"],
        meta.get("file_channels"),
    )
