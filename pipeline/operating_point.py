"""The operating point: a required recall of one class, met on validation by a logit offset.

An inspection line usually cares more about missing a defective part than about a false alarm.
`train.operating_point: {label: defective, recall: 0.8}` adds a constant to that class's logit
(`models.ClassOffset`, inside the exported graph), chosen on the validation split: of all offsets
whose validation recall of the class is at least the target, the one with the best validation
accuracy (ties: the one closest to 0). The test split only reports what it gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen offset on the logit of class `index`, and what it gives on validation."""

    index: int
    offset: float
    val_recall: float
    val_accuracy: float


def predict_with_offset(logits: np.ndarray, index: int, offset: float) -> np.ndarray:
    """Class indices after adding `offset` to column `index` of (N, C) `logits`."""
    shifted = np.array(logits, dtype=np.float64, copy=True)
    shifted[:, index] += offset
    return shifted.argmax(1)


def choose_offset(logits: np.ndarray, y: np.ndarray, index: int, recall: float) -> OperatingPoint:
    """The offset for class `index` with the best accuracy among those reaching `recall` on (`logits`, `y`).

    Class `index` is predicted for a sample exactly when the offset exceeds its margin, the best
    other logit minus its own; the candidates are therefore 0 and the midpoints between (and
    beyond) the distinct margins, and a large enough offset always reaches any recall.

    Raises:
        ValueError: no sample of class `index` in `y`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    positives = y == index
    if not positives.any():
        raise ValueError(f"no validation sample of class {index}: its recall cannot be measured")
    margin = np.delete(logits, index, axis=1).max(1) - logits[:, index]
    edges = np.unique(margin)
    candidates = np.concatenate([[0.0, edges[0] - 1.0, edges[-1] + 1.0], (edges[:-1] + edges[1:]) / 2])
    best: OperatingPoint | None = None
    for offset in sorted(candidates, key=abs):  # ties go to the offset closest to 0
        pred = predict_with_offset(logits, index, float(offset))
        got = float(np.mean(pred[positives] == index))
        if got + 1e-12 < recall:
            continue
        accuracy = float(np.mean(pred == y))
        if best is None or accuracy > best.val_accuracy:
            best = OperatingPoint(index, float(offset), got, accuracy)
    assert best is not None  # the largest candidate predicts the class for every sample
    return best
