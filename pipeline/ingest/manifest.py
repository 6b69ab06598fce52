"""Manifest CSVs: one row per file, shared by the signal and the image readers."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError

SPLIT_VALUES = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest CSV, checked: a path and a label, an optional split, and every cell."""

    line: int  # line in the CSV (the header is line 1), for messages
    path: Path  # resolved: relative paths are relative to the manifest's folder
    name: str  # the path as written
    label: str
    split: str | None
    cells: dict[str, str]  # every column, stripped


def read_manifest(manifest: Path, key: str, optional: str) -> list[ManifestRow]:
    """Rows of a UTF-8 CSV with columns `path` and `label` (plus optional ones).

    Args:
        manifest: the CSV file.
        key: the config key that names it, for messages (`data.folder.manifest`).
        optional: the optional columns, for the message about a wrong header.

    Raises:
        UserError: missing file or column, not UTF-8, empty path or label, a split that is not
            train/val/test.
    """
    if not manifest.is_file():
        raise UserError(f"{key}: {str(manifest)!r} not found")
    try:
        with manifest.open(
            newline="", encoding="utf-8-sig"
        ) as handle:  # -sig: Excel's "CSV UTF-8" starts with a BOM
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise UserError(
                    f"{manifest}: missing column(s) {missing}; the header must include path,label "
                    f"(optional {optional}); found {columns}"
                )
            raw = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{manifest}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the manifest as UTF-8 CSV"
        ) from None
    rows = []
    for line, cells in enumerate(raw, start=2):
        if not cells.get("path") or not cells.get("label"):
            raise UserError(f"{manifest}, line {line}: empty path or label")
        split = cells.get("split") or None
        if split not in (None, *SPLIT_VALUES):
            raise UserError(f"{manifest}, line {line}: split {split!r} must be train, val or test (or empty)")
        path = Path(cells["path"])
        rows.append(
            ManifestRow(
                line,
                path if path.is_absolute() else manifest.parent / path,
                cells["path"],
                cells["label"],
                split,
                cells,
            )
        )
    return rows
