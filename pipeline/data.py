"""Data preparation shared by every trial of a job: ingest, leakage-safe split, network inputs.

Signals: recordings -> split by recording -> windows -> CWT/STFT images.
Images: samples -> decoded and sized (unreadable files skipped and reported) -> split by part.
Both end as a `PreparedData`: a `WindowSet` (labels and the unit each sample came from) and the
normalised network inputs of each split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

import signal2image
from models import get_preprocessing
from pipeline import cache
from pipeline.config import JobConfig
from pipeline.errors import UserError
from pipeline.ingest import load_recordings
from pipeline.ingest.images import ImageIngest, decode_all, load_elpv, read_image_folder, read_image_manifest
from pipeline.ingest.split import SPLIT_NAMES, Split, split_given, split_recordings, split_units
from pipeline.ingest.windows import WindowSet, make_windows
from pipeline.plots import examples_figure
from signal2image.base import zscore
from signal2image.prepare import nyquist_problem


@dataclass
class PreparedData:
    """Everything the trials share: the split, the samples and the network inputs of each split.

    For signals a sample is a window and its unit the recording; for images a sample is an image
    and its unit the part (group) it shows.
    """

    classes: list[str]
    split: Split
    windows: dict[str, WindowSet]
    images: dict[str, torch.Tensor]
    transform: Any
    seconds: float
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    window: dict[str, int] | None = None  # signals: {"length": samples, "hop": samples}
    # how the split was made, and the held-out condition values
    conditions: dict[str, Any] = field(default_factory=dict)
    file_channels: int | None = None  # signals: channels of every source file (None: they differ)

    @property
    def is_image(self) -> bool:
        return self.transform.kind == "image"

    def report(self) -> dict[str, Any]:
        """Units and samples per class and split, and what was skipped."""
        unit = "images" if self.is_image else "recordings"
        out: dict[str, Any] = {
            "classes": self.classes,
            unit: self.split.report(),
            "samples": {},
            "skipped_short_recordings": {},
        }
        for name, ws in self.windows.items():
            counts = np.bincount(ws.y, minlength=len(self.classes))
            out["samples"][name] = {c: int(n) for c, n in zip(self.classes, counts)}
            out["skipped_short_recordings"][name] = list(ws.skipped)
        out["skipped_files"] = {
            "count": len(self.skipped_files),
            "files": [{"path": p, "reason": r} for p, r in self.skipped_files],
        }
        if self.conditions:
            out["split"] = self.conditions
        return out

    def fingerprint(self) -> str:
        """Hash of the split (which unit went where) and of the sample contents."""
        digest = hashlib.sha256()
        for name in SPLIT_NAMES:
            ws = self.windows[name]
            digest.update(name.encode())
            digest.update("\n".join(ws.recording_ids).encode())
            digest.update(np.ascontiguousarray(ws.y).tobytes())
            digest.update(np.ascontiguousarray(ws.x).tobytes())
        return digest.hexdigest()[:16]


def prepare_data(cfg: JobConfig, echo: Callable[[str], None] = print) -> PreparedData:
    """The data of the job, split before any window is cut or any image is shared."""
    return _prepare_images(cfg, echo) if cfg.data.is_image else _prepare_signals(cfg, echo)


def _prepare_signals(cfg: JobConfig, echo: Callable[[str], None]) -> PreparedData:
    start = time.perf_counter()
    folder, hit = None, None
    if cfg.data.cache:  # the key stats every source file: only when caching
        # The transform config (level/normalise decide what is fitted on the training split) and the
        # full description the transform is built from (channels and mean/std follow model.in_channels
        # and the backbone). The sample rate is left as the config gives it (cfg.data.fs, often None):
        # the one read from the recordings follows from the data config and file identity in the key.
        spec = {
            "transform": cfg.transform.model_dump(mode="json"),
            "built_from": transform_spec(cfg),
        }
        folder = cfg.data.cache_dir / cache.cache_key(cfg, spec)
        hit = cache.load(folder)
    if hit is not None:
        classes, split, windows, images, skipped, spec, window, conditions, file_channels = hit
        for name, ws in windows.items():
            echo(
                f"  {name:5s}: {len(split.parts()[name]):4d} recordings -> {len(ws):6d} windows -> "
                f"{tuple(images[name].shape[1:])} images (cached)"
            )
        echo(f"  from the cache {folder} (data and transform unchanged; data.cache: false rebuilds)")
        return PreparedData(
            classes,
            split,
            windows,
            images,
            signal2image.from_dict(spec),
            time.perf_counter() - start,
            skipped,
            window,
            conditions,
            file_channels,
        )
    dropped: dict[str, list[str]] = {}
    recordings = load_recordings(cfg.data, dropped)
    skipped = [(path, "NaN or Inf values (nan_policy: drop)") for path in dropped.get("nan_dropped", [])]
    if skipped:
        echo(
            f"  warning: {len(skipped)} recording(s) with NaN/Inf dropped: "
            f"{', '.join(p for p, _ in skipped[:5])}"
        )
    classes = list(dict.fromkeys(r.label for r in recordings))
    counts = {r.file_channels or r.signal.shape[0] for r in recordings}
    file_channels = counts.pop() if len(counts) == 1 else None
    # UCR: the archive's own test part stays the test split; a manifest's split column is used as is.
    split = split_recordings(recordings, cfg.data.split, official_test=cfg.data.source == "ucr")
    conditions = _split_conditions(cfg, split)
    if cfg.data.normalise == "recording":  # before windowing; "window" is done by the transform
        split = Split(
            **{
                name: tuple(dataclasses.replace(r, signal=zscore(r.signal)) for r in items)
                for name, items in split.parts().items()
            }
        )
    try:
        length, hop = cfg.data.window.samples(recordings[0].fs)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    windows = {name: make_windows(recs, classes, length, hop) for name, recs in split.parts().items()}
    for name, ws in windows.items():
        missing = [c for i, c in enumerate(classes) if not np.any(ws.y == i)]
        if missing and name == "train":
            raise UserError(
                f"the train split has no window of class(es) {missing}: their recordings are shorter than "
                f"the window ({length} samples) or held out; lower data.window.length, add recordings "
                "or change data.split"
            )
        if missing:  # a held-out condition need not hold every fault
            echo(
                f"  note: the {name} split has no window of class(es) {missing}; its metrics cover the others"
            )
    transform = build_transform(cfg, fs=recordings[0].fs)
    if cfg.transform.level == "train" or cfg.transform.normalise == "train":
        t0 = time.perf_counter()
        transform.fit(
            windows["train"].x,
            level=cfg.transform.level == "train",
            stats=cfg.transform.normalise == "train",
            seed=cfg.data.split.seed,
        )
        fitted = (
            f"level {transform.level_db:.1f} dB, " if transform.level_db is not None else ""
        ) + f"mean {_short(transform.mean)}, std {_short(transform.std)}"
        echo(f"  fitted on the training split: {fitted} ({time.perf_counter() - t0:.1f} s)")
    images = {}
    for name, ws in windows.items():
        t0 = time.perf_counter()
        images[name] = transform(ws.x)
        echo(
            f"  {name:5s}: {len(split.parts()[name]):4d} recordings -> {len(ws):6d} windows -> "
            f"{tuple(images[name].shape[1:])} images ({time.perf_counter() - t0:.1f} s)"
        )
    if folder is not None:
        try:
            cache.save(
                folder,
                classes,
                split,
                windows,
                images,
                skipped,
                transform.to_dict(),
                {"length": length, "hop": hop},
                conditions,
                file_channels=file_channels,
            )
        except OSError as exc:  # a full or read-only disk must not stop the job
            echo(f"  warning: could not write the cache {folder} ({exc.strerror})")
    return PreparedData(
        classes,
        split,
        windows,
        images,
        transform,
        time.perf_counter() - start,
        skipped,
        {"length": length, "hop": hop},
        conditions,
        file_channels,
    )


def _short(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def _split_conditions(cfg: JobConfig, split: Split) -> dict[str, Any]:
    """How the split was made; for a split by condition, the condition's values in each split."""
    out: dict[str, Any] = {"by": cfg.data.split.by}
    key = cfg.data.split.condition
    if cfg.data.split.by == "condition" and key:
        out["condition"] = key
        for name, items in split.parts().items():
            values = sorted({r.condition[key] for r in items}, key=str)
            out[name] = values if len(values) <= 20 else [min(values), max(values)]
    return out


def _load_image_samples(cfg: JobConfig) -> ImageIngest:
    if cfg.data.source == "elpv":
        return load_elpv(cfg.data.elpv.threshold)
    images = cfg.data.images
    assert images is not None  # checked by the schema
    return read_image_folder(images.path) if images.path is not None else read_image_manifest(images.manifest)  # type: ignore[arg-type]


def _prepare_images(cfg: JobConfig, echo: Callable[[str], None]) -> PreparedData:
    start = time.perf_counter()
    ingest = _load_image_samples(cfg)
    transform = build_transform(cfg)
    kept, sized, skipped = decode_all(ingest.samples, transform.fit_size)
    skipped = ingest.skipped + skipped
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        echo(
            f"  warning: {len(skipped)} unreadable image(s) skipped: "
            f"{shown}{' ...' if len(skipped) > 5 else ''}"
        )
    classes = sorted({s.label for s in ingest.samples})
    empty = [c for c in classes if not any(s.label == c for s in kept)]
    if empty:
        raise UserError(f"class(es) {empty} have no readable image; fix or remove them")
    index = {id(s): i for i, s in enumerate(kept)}
    pixels = torch.stack(sized)  # (N, 3, S, S) in [0, 1]
    by = cfg.data.split.by
    if by == "column" and not any(s.split for s in kept):
        raise UserError(
            "data.split.by is 'column' but the images carry no split column; add one to the manifest "
            "(train/val/test) or use by: auto"
        )
    if by == "column" or (by == "auto" and any(s.split for s in kept)):
        split = split_given(kept, unit=lambda s: s.group)
    else:
        split = split_units(kept, cfg.data.split, unit=lambda s: s.group, noun="part")
    if cfg.transform.normalise == "train":
        train_rows = torch.tensor([index[id(s)] for s in split.train], dtype=torch.long)
        transform.fit(pixels[train_rows])
        echo(f"  fitted on the training split: mean {_short(transform.mean)}, std {_short(transform.std)}")
    windows, images = {}, {}
    for name, items in split.parts().items():
        rows = torch.tensor([index[id(s)] for s in items], dtype=torch.long)
        groups = list(dict.fromkeys(s.group for s in items))
        where = {g: i for i, g in enumerate(groups)}
        windows[name] = WindowSet(
            x=pixels[rows].numpy(),
            y=np.array([classes.index(s.label) for s in items], dtype=np.int64),
            recording=np.array([where[s.group] for s in items], dtype=np.int64),
            recording_ids=tuple(groups),
        )
        images[name] = transform.normalise(pixels[rows])
        echo(
            f"  {name:5s}: {len(groups):5d} parts -> {len(items):6d} images -> "
            f"{tuple(images[name].shape[1:])}"
        )
    return PreparedData(classes, split, windows, images, transform, time.perf_counter() - start, skipped)


def transform_spec(cfg: JobConfig, fs: float | None = None) -> dict[str, Any]:
    """The description `signal2image.from_dict` builds the config's transform from: the transform
    settings with the backbone's normalisation for `model.in_channels` (`fs`: the data's sample rate,
    else `data.fs`, which may be None before the recordings are read). Before any fitting."""
    pre = get_preprocessing(cfg.model.backbone)
    t = cfg.transform
    channels = cfg.model.in_channels
    # One grey channel into a first convolution summed over RGB: the backbone's mean/std averaged.
    mean, std = (pre.mean, pre.std) if channels == 3 else ((sum(pre.mean) / 3,), (sum(pre.std) / 3,))
    if t.kind == "image":
        return {
            "kind": "image",
            "image_size": t.image_size,
            "policy": t.policy,
            "mean": mean,
            "std": std,
            "channels": channels,
        }
    common = dict(
        fs=fs or cfg.data.fs,
        image_size=t.image_size,
        floor_db=t.floor_db,
        mean=mean,
        std=std,
        channels=channels,
        signal_norm=cfg.data.normalise,
    )
    # A CWT is computed at the image's resolution, as the raw-signal ONNX model computes it.
    cwt = {**t.cwt.model_dump(), "sampling": "output"}
    settings = {"cwt": cwt, "stft": t.stft.model_dump()}.get(t.kind, {})
    return {"kind": t.kind, **common, **settings}


def build_transform(cfg: JobConfig, fs: float | None = None) -> Any:
    """The transform of the config with the backbone's normalisation (`fs`: the data's sample rate)."""
    spec = transform_spec(cfg, fs)
    t = cfg.transform
    fs = spec.get("fs")
    problem = nyquist_problem(t.cwt.f_max, fs, "transform.cwt.f_max") if t.kind == "cwt" and fs else None
    if problem:
        raise UserError(problem)
    return signal2image.from_dict(spec)


def train_subset(windows: WindowSet, fraction: float, seed: int) -> np.ndarray:
    """Indices of the samples of a per-class fraction of the training units (at least one each).

    Nested: for one seed, the units of a smaller fraction are a subset of a larger one's.
    """
    if fraction >= 1.0:
        return np.arange(len(windows))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(windows.y):
        units = np.unique(windows.recording[windows.y == c])
        keep += rng.permutation(units)[: max(1, int(round(fraction * len(units))))].tolist()
    return np.flatnonzero(np.isin(windows.recording, keep))


def examples(data: PreparedData) -> Figure:
    """The first training sample of each class as the network sees it (Hz and seconds axes for signals)."""
    ws, images, transform = data.windows["train"], data.images["train"], data.transform
    pictures = []
    for c in range(len(data.classes)):
        i = int(np.flatnonzero(ws.y == c)[0])
        pictures.append(
            (
                images[i].numpy() * np.array(transform.std)[:, None, None]
                + np.array(transform.mean)[:, None, None]
            ).transpose(1, 2, 0)
        )
    if data.is_image or not transform.has_frequency_axis:
        return examples_figure(
            pictures, data.classes, duration_s=None, row_frequencies=None, kind=transform.kind
        )
    freqs = transform.frequencies(ws.x.shape[-1])
    rows = np.interp(np.linspace(0, len(freqs) - 1, transform.image_size), np.arange(len(freqs)), freqs)
    return examples_figure(
        [p[..., 0] for p in pictures],
        data.classes,
        duration_s=ws.x.shape[-1] / transform.fs,
        row_frequencies=rows,
        kind=transform.kind,
    )
