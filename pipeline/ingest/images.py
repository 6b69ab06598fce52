"""Defect images in: a folder per class, a manifest CSV, or the ELPV solar-cell set.

Images are decoded by `signal2image.imageio.decode_image` (OpenCV; re-exported here): EXIF
orientation applied, float [0, 1] by bit depth, grayscale one channel, colour RGB, alpha over white.
Unreadable files are skipped and reported, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.ingest.manifest import read_manifest
from signal2image.errors import require
from signal2image.imageio import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageSample:
    """One labelled image. `group` is the physical part it shows: the split keeps a group together."""

    id: str
    label: str
    path: Path
    group: str
    split: str | None = None
    condition: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageIngest:
    samples: list[ImageSample]
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files


def decode_all(samples: list[ImageSample], convert) -> tuple[list[ImageSample], list, list[tuple[str, str]]]:
    """Decode every sample and pass it through `convert` (e.g. resize); unreadable files are skipped.

    Returns:
        The samples kept, their converted images, and (path, reason) of each skipped file.
    """
    kept, images, skipped = [], [], []
    for sample in samples:
        try:
            images.append(convert(decode_image(sample.path)))
        except ValueError as exc:
            skipped.append((str(sample.path), str(exc)))
            continue
        kept.append(sample)
    return kept, images, skipped


def read_image_folder(root: Path) -> ImageIngest:
    """`root/<label>/**/<image>`: one sub-folder per class; every image is its own group."""
    if not root.is_dir():
        raise UserError(
            f"data.images.path: {str(root)!r} is not a folder; it must hold one sub-folder per class"
        )
    samples: list[ImageSample] = []
    skipped: list[tuple[str, str]] = []
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    for class_dir in classes:
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(
                f"class {class_dir.name!r} ({class_dir}) holds no image ({', '.join(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        for file in files:
            rel = str(file.relative_to(root))
            samples.append(ImageSample(id=rel, label=class_dir.name, path=file, group=rel))
    if len(classes) < 2:
        raise UserError(
            f"data.images.path: {str(root)!r} has {len(classes)} class folder(s); "
            "it needs one sub-folder per class, at least two"
        )
    return ImageIngest(samples, skipped)


def read_image_manifest(manifest: Path) -> ImageIngest:
    """A CSV with columns `path` and `label`, optional `group` (part id) and `split` (train/val/test).

    Relative paths are relative to the manifest's folder.
    """
    samples, skipped = [], []
    for row in read_manifest(manifest, "data.images.manifest", "group, split"):
        if not row.path.is_file():
            skipped.append((str(row.path), "file not found"))
            continue
        samples.append(
            ImageSample(
                id=row.name,
                label=row.label,
                path=row.path,
                group=row.cells.get("group") or row.name,
                split=row.split,
            )
        )
    if len({s.label for s in samples}) < 2:
        raise UserError(
            f"{manifest}: images of {len({s.label for s in samples})} class(es) found; "
            "at least two are needed"
        )
    return ImageIngest(samples, skipped)


def load_elpv(threshold: float) -> ImageIngest:
    """The ELPV solar-cell set (PyPI `elpv-dataset`): `defective` when the defect probability >= threshold."""
    elpv_dataset = require("elpv_dataset", "elpv", "data.source: elpv (the ELPV solar-cell set)")
    data_dir = Path(elpv_dataset.__file__).parent / "data"
    table = np.genfromtxt(
        data_dir / "labels.csv", dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"]
    )
    samples = [
        ImageSample(
            id=rel,
            label="defective" if prob >= threshold else "functional",
            path=data_dir / rel,
            group=rel,
            condition={"defect_probability": f"{prob:.3f}", "type": kind},
        )
        for rel, prob, kind in zip(
            np.char.decode(table["path"]), table["probability"], np.char.decode(table["type"])
        )
    ]
    return ImageIngest(samples, [])
