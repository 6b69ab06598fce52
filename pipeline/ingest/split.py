"""Leakage-safe splits: whole units (a recording, or the physical part an image shows) are assigned to
train/val/test before any window is cut, stratified by class."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import SplitConfig
from pipeline.errors import UserError

SPLIT_NAMES = ("train", "val", "test")


class LeakageError(UserError):
    """A unit (recording, part) or its source file appears in more than one split."""


@dataclass(frozen=True)
class Split:
    """Items (recordings or image samples, each with `.label`) of each split."""

    train: tuple[Any, ...]
    val: tuple[Any, ...]
    test: tuple[Any, ...]

    def parts(self) -> dict[str, tuple[Any, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def report(self) -> dict[str, dict[str, int]]:
        """Items per class and split."""
        return {name: dict(sorted(Counter(r.label for r in items).items())) for name, items in self.parts().items()}


def split_units(items: Sequence[Any], config: SplitConfig, *, unit: Callable[[Any], str], noun: str) -> Split:
    """Stratified split of whole units; every class gets at least one unit in each split.

    Args:
        items: recordings or image samples (anything with `.label`).
        config: the fractions and the seed.
        unit: the unit an item belongs to (recording id, part id); a unit never spans two splits.
        noun: what a unit is called in messages ("recording", "part").

    Raises:
        UserError: a class has too few units for three splits.
    """
    members: dict[str, list[Any]] = {}
    for item in items:
        members.setdefault(unit(item), []).append(item)
    unit_label = {u: Counter(i.label for i in its).most_common(1)[0][0] for u, its in members.items()}
    rng = np.random.default_rng(config.seed)
    parts: dict[str, list[Any]] = {name: [] for name in SPLIT_NAMES}
    for label in sorted(set(unit_label.values())):
        units = sorted(u for u, lab in unit_label.items() if lab == label)
        n = len(units)
        n_val = max(1, int(round(config.val * n)))
        n_test = max(1, int(round(config.test * n)))
        if n - n_val - n_test < 1:
            raise UserError(
                f"class {label!r} has {n} {noun}(s); a split into train/val/test needs at least 3 "
                f"(add {noun}s of this class or remove the class)"
            )
        order = rng.permutation(n)
        for name, chosen in (("val", order[:n_val]), ("test", order[n_val : n_val + n_test]), ("train", order[n_val + n_test :])):
            for i in chosen:
                parts[name] += members[units[i]]
    split = Split(**{k: tuple(v) for k, v in parts.items()})
    assert_disjoint(split, unit)
    return split


def split_by_recording(recordings: Sequence[Any], config: SplitConfig) -> Split:
    """Stratified split of whole recordings (the default for signals).

    Raises:
        UserError: a class has too few recordings.
        LeakageError: recording ids are not unique (the guard would not be sound).
    """
    repeated = [i for i, c in Counter(r.id for r in recordings).items() if c > 1]
    if repeated:
        raise LeakageError(f"recording ids must be unique; repeated: {repeated[:5]}")
    return split_units(recordings, config, unit=lambda r: r.id, noun="recording")


def split_given(items: Sequence[Any], *, unit: Callable[[Any], str]) -> Split:
    """The split named by each item's `.split` (a manifest's split column).

    Raises:
        UserError: some items have no split, or a split lacks a class the training split lacks.
    """
    missing = [i.id for i in items if i.split not in SPLIT_NAMES]
    if missing:
        raise UserError(f"the manifest's split column is empty for {len(missing)} row(s), e.g. {missing[:3]}; fill it for every row or drop the column")
    split = Split(**{name: tuple(i for i in items if i.split == name) for name in SPLIT_NAMES})
    train_labels = {i.label for i in split.train}
    for name in ("val", "test"):
        extra = sorted({i.label for i in split.parts()[name]} - train_labels)
        if extra:
            raise UserError(f"labels {extra} are in the {name} split but not in train; the model cannot learn them")
        if not split.parts()[name]:
            raise UserError(f"the manifest's split column names no {name} row; at least one is needed")
    assert_disjoint(split, unit)
    return split


def split_official_test(items: Sequence[Any], config: SplitConfig, *, unit: Callable[[Any], str], noun: str) -> Split:
    """Items marked `condition['split'] == 'test'` are the test split; the others are split into
    train and validation, stratified, with validation taking `config.val` of them."""
    test = tuple(i for i in items if i.condition.get("split") == "test")
    rest = [i for i in items if i.condition.get("split") != "test"]
    if not test:
        raise UserError("the data set has no official test part")
    members: dict[str, list[Any]] = {}
    for item in rest:
        members.setdefault(item.label, []).append(item)
    rng = np.random.default_rng(config.seed)
    train, val = [], []
    for label in sorted(members):
        group = sorted(members[label], key=unit)
        n_val = max(1, int(round(config.val * len(group))))
        if len(group) - n_val < 1:
            raise UserError(f"class {label!r} has {len(group)} training {noun}(s); at least 2 are needed for train and validation")
        order = rng.permutation(len(group))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    missing = sorted({i.label for i in test} - {i.label for i in train})
    if missing:
        raise UserError(f"labels {missing} are in the test part but not in the training part")
    split = Split(tuple(train), tuple(val), test)
    assert_disjoint(split, unit)
    return split


def assert_disjoint(split: Split, unit: Callable[[Any], str] = lambda r: r.id) -> None:
    """Refuse any unit or source file shared between two splits."""
    seen: dict[str, str] = {}
    for name, items in split.parts().items():
        for item in items:
            keys = [f"unit:{unit(item)}"]
            source = getattr(item, "path", None) or getattr(item, "condition", {}).get("file")
            if source:
                keys.append(f"file:{source}")
            for key in keys:
                if seen.setdefault(key, name) != name:
                    raise LeakageError(f"{key} is in both the {seen[key]} and the {name} split")
