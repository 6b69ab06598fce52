"""The operating point: a required recall of one class, met on validation by a logit offset.

An inspection line usually cares more about missing a defective part than about a false alarm.
`train.operating_point: {label: defective, recall: 0.8}` adds a constant to that class's logit
(`models.ClassOffset`, inside the exported graph), chosen on the validation split: of all offsets
whose validation recall of the class is at least the target, the one with the best validation
accuracy (ties: the one closest to 0). The test split only reports what it gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ARGMAX = "argmax"  # the decision rule of a model without an operating point


def decision_rule(point: Any) -> str:
    """How a job's exported model decides, as the registry compares it: ``argmax``, or
    ``recall of 'LABEL' >= R`` for a `train.operating_point` (`OperatingPointConfig` or None)."""
    return ARGMAX if point is None else f"recall of {point.label!r} >= {point.recall:g}"


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen offset on the logit of class `index`, and what it gives on validation."""

    index: int
    offset: float
    val_recall: float
    val_accuracy: float


def class_offsets(n_classes: int, index: int, offset: float) -> list[float]:
    """One logit offset per class: `offset` on class `index`, 0 elsewhere."""
    return [offset if k == index else 0.0 for k in range(n_classes)]


def predict_with_offset(logits: np.ndarray, index: int, offset: float) -> np.ndarray:
    """Class indices after adding `offset` to column `index` of (N, C) `logits`."""
    shifted = np.array(logits, dtype=np.float64, copy=True)
    shifted[:, index] += offset
    return shifted.argmax(1)


def choose_offset(logits: np.ndarray, y: np.ndarray, index: int, recall: float) -> OperatingPoint:
    """The offset for class `index` with the best accuracy among those reaching `recall` on (`logits`, `y`).

    Class `index` is predicted for a sample exactly when the offset exceeds its margin, the best
    other logit minus its own; the candidates are therefore 0 and the midpoints between (and
    beyond) the distinct margins, and a large enough offset always reaches any recall. A midpoint
    between two nearly equal margins leaves little slack: float rounding in another runtime (FP16,
    INT8) can move a sample across it, so the recall on new data is the target give or take a sample.

    Raises:
        ValueError: no sample of class `index` in `y`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    positives = y == index
    if not positives.any():
        raise ValueError(f"no validation sample of class {index}: its recall cannot be measured")
    others = np.delete(logits, index, axis=1)
    other_class = np.delete(np.arange(logits.shape[1]), index)[others.argmax(1)]
    margin = others.max(1) - logits[:, index]  # the class is predicted when offset > margin
    edges = np.unique(margin)
    candidates = np.concatenate([[0.0, edges[0] - 1.0, edges[-1] + 1.0], (edges[:-1] + edges[1:]) / 2])
    candidates = candidates[np.argsort(np.abs(candidates), kind="stable")]  # ties: closest to 0 first
    # Sorted margins and counts instead of one argmax pass per candidate: O(n log n).
    pos_margin = np.sort(margin[positives])
    kept_margin = np.sort(margin[~positives & (other_class == y)])  # right while not called `index`
    hits = np.searchsorted(pos_margin, candidates, side="left")  # positives with margin < offset
    kept = len(kept_margin) - np.searchsorted(kept_margin, candidates, side="left")
    recall_at = hits / len(pos_margin)
    accuracy_at = (hits + kept) / len(y)
    feasible = recall_at + 1e-12 >= recall  # the largest candidate calls every sample `index`
    best = int(np.flatnonzero(feasible)[np.argmax(accuracy_at[feasible])])  # first maximum: closest to 0
    return OperatingPoint(index, float(candidates[best]), float(recall_at[best]), float(accuracy_at[best]))
