"""Leakage-safe splits: recordings are assigned to train/val/test before any window is cut."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.config import SplitConfig
from pipeline.errors import UserError
from pipeline.ingest.recording import Recording

SPLIT_NAMES = ("train", "val", "test")


class LeakageError(RuntimeError):
    """A recording (or its source file) appears in more than one split."""


@dataclass(frozen=True)
class RecordingSplit:
    train: tuple[Recording, ...]
    val: tuple[Recording, ...]
    test: tuple[Recording, ...]

    def parts(self) -> dict[str, tuple[Recording, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def report(self) -> dict[str, dict[str, int]]:
        """Recordings per class and split."""
        return {name: dict(sorted(Counter(r.label for r in recs).items())) for name, recs in self.parts().items()}


def split_by_recording(recordings: list[Recording], config: SplitConfig) -> RecordingSplit:
    """Stratified split of whole recordings; every class gets at least one recording per split.

    Raises:
        UserError: a class has too few recordings for three splits.
        LeakageError: recording ids are not unique (the guard below would not be sound).
    """
    ids = Counter(r.id for r in recordings)
    repeated = [i for i, c in ids.items() if c > 1]
    if repeated:
        raise LeakageError(f"recording ids must be unique; repeated: {repeated[:5]}")
    rng = np.random.default_rng(config.seed)
    parts: dict[str, list[Recording]] = {name: [] for name in SPLIT_NAMES}
    for label in sorted({r.label for r in recordings}):
        members = sorted((r for r in recordings if r.label == label), key=lambda r: r.id)
        n = len(members)
        n_val = max(1, int(round(config.val * n)))
        n_test = max(1, int(round(config.test * n)))
        if n - n_val - n_test < 1:
            raise UserError(
                f"class {label!r} has {n} recording(s); a split into train/val/test needs at least 3 "
                "(add recordings of this class or remove the class)"
            )
        order = rng.permutation(n)
        parts["val"] += [members[i] for i in order[:n_val]]
        parts["test"] += [members[i] for i in order[n_val : n_val + n_test]]
        parts["train"] += [members[i] for i in order[n_val + n_test :]]
    split = RecordingSplit(**{k: tuple(v) for k, v in parts.items()})
    assert_disjoint(split)
    return split


def assert_disjoint(split: RecordingSplit) -> None:
    """Refuse any recording id or source file shared between two splits."""
    seen: dict[str, str] = {}
    for name, recs in split.parts().items():
        for rec in recs:
            for key in (f"id:{rec.id}", f"file:{rec.condition.get('file')}" if "file" in rec.condition else None):
                if key is None:
                    continue
                if key in seen and seen[key] != name:
                    raise LeakageError(f"{key} is in both the {seen[key]} and the {name} split")
                seen[key] = name
