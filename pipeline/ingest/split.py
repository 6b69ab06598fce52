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
        """The three splits by name, in the order train, val, test."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def report(self) -> dict[str, dict[str, int]]:
        """Items per class and split."""
        return {
            name: dict(sorted(Counter(r.label for r in items).items()))
            for name, items in self.parts().items()
        }


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
        for name, chosen in (
            ("val", order[:n_val]),
            ("test", order[n_val : n_val + n_test]),
            ("train", order[n_val + n_test :]),
        ):
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
    return split_units(recordings, config, unit=lambda r: getattr(r, "unit", r.id), noun="recording")


def split_given(
    items: Sequence[Any],
    *,
    unit: Callable[[Any], str],
    split_of: Callable[[Any], str | None] = lambda i: i.split,
) -> Split:
    """The split named by each item (a manifest's split column).

    Raises:
        UserError: some items have no split, a split is empty, or val/test hold a class train lacks.
        LeakageError: one unit (recording, part) is named in two splits.
    """
    missing = [i.id for i in items if split_of(i) not in SPLIT_NAMES]
    if missing:
        raise UserError(
            f"the manifest's split column is empty for {len(missing)} row(s), e.g. {missing[:3]}; "
            "fill it for every row or drop the column"
        )
    split = Split(**{name: tuple(i for i in items if split_of(i) == name) for name in SPLIT_NAMES})
    for name in ("val", "test"):
        if not split.parts()[name]:
            raise UserError(f"the manifest's split column names no {name} row; at least one is needed")
    _labels_seen_in_train(split, "the manifest's split column")
    assert_disjoint(split, unit)
    return split


def _labels_seen_in_train(split: Split, how: str) -> None:
    train_labels = {i.label for i in split.train}
    for name in ("val", "test"):
        extra = sorted({i.label for i in split.parts()[name]} - train_labels)
        if extra:
            raise UserError(
                f"labels {extra} are in the {name} split but not in train ({how}); "
                "the model cannot learn them: add training recordings of them or change the split"
            )


def _in_test(value: Any, config: SplitConfig) -> bool:
    if config.test_range is not None:
        try:
            return config.test_range[0] <= float(value) <= config.test_range[1]
        except (TypeError, ValueError):
            return False
    return any(_same(value, v) for v in config.test_values or ())


def _same(a: Any, b: Any) -> bool:
    try:
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    except (TypeError, ValueError):
        return str(a) == str(b)


def split_by_condition(recordings: Sequence[Any], config: SplitConfig) -> Split:
    """Cross-condition split: test = the recordings whose `config.condition` value is held out
    (`test_values` or `test_range`); validation = `config.val` of the other recordings' units,
    stratified by class; train = the rest.

    Raises:
        UserError: a recording lacks the condition (the message lists the ones it has), nothing or
            everything is held out, or the test split holds a class train lacks.
    """
    key = config.condition
    assert key is not None  # checked by the schema
    lacking = [r for r in recordings if key not in r.condition]
    if lacking:
        have = sorted(k for k in lacking[0].condition if k != "file")
        raise UserError(
            f"data.split.condition: recording {lacking[0].id!r} has no {key!r}; its conditions are {have} "
            f"(a manifest can add a {key} column)"
        )
    held = (
        f"test_values {list(config.test_values)}"
        if config.test_values is not None
        else f"test_range {list(config.test_range or ())}"
    )
    test = [r for r in recordings if _in_test(r.condition[key], config)]
    rest = [r for r in recordings if not _in_test(r.condition[key], config)]
    values = sorted({str(r.condition[key]) for r in recordings})
    if not test or not rest:
        raise UserError(
            f"data.split.{held} holds out {'no' if not test else 'every'} recording; "
            f"the values of {key!r} are {values[:20]}"
        )
    units: dict[str, list[Any]] = {}
    for r in rest:
        units.setdefault(r.unit, []).append(r)
    rng = np.random.default_rng(config.seed)
    train: list[Any] = []
    val: list[Any] = []
    for label in sorted({r.label for r in rest}):
        mine = sorted(u for u, rs in units.items() if rs[0].label == label)
        n_val = max(1, int(round(config.val / (config.train + config.val) * len(mine))))
        if len(mine) - n_val < 1:
            raise UserError(
                f"class {label!r} has {len(mine)} recording(s) outside the held-out {key}; "
                "at least 2 are needed for train and validation"
            )
        order = rng.permutation(len(mine))
        for i, j in enumerate(order):
            (val if i < n_val else train).extend(units[mine[j]])
    split = Split(tuple(train), tuple(val), tuple(test))
    _labels_seen_in_train(split, f"split by {key}")
    assert_disjoint(split, lambda r: r.unit)
    return split


def split_recordings(recordings: Sequence[Any], config: SplitConfig, *, official_test: bool = False) -> Split:
    """The configured split of signal recordings (`official_test`: the source marks a test part, as UCR does).

    `by: auto` uses the source's own split (a manifest's split column, UCR's test file) when it has
    one, else splits by recording.
    """
    named = any(r.condition.get("split") in SPLIT_NAMES for r in recordings) and not official_test
    if config.by == "condition":
        return split_by_condition(recordings, config)
    if config.by == "column" or (config.by == "auto" and named):
        if not named:
            raise UserError(
                "data.split.by is 'column' but the recordings carry no split column; "
                "add a split column (train/val/test) to the manifest or use by: recording"
            )
        return split_given(recordings, unit=lambda r: r.unit, split_of=lambda r: r.condition.get("split"))
    if config.by == "auto" and official_test:
        return split_official_test(recordings, config, unit=lambda r: r.unit, noun="series")
    return split_by_recording(recordings, config)


def split_official_test(
    items: Sequence[Any], config: SplitConfig, *, unit: Callable[[Any], str], noun: str
) -> Split:
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
            raise UserError(
                f"class {label!r} has {len(group)} training {noun}(s); "
                "at least 2 are needed for train and validation"
            )
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
