"""The evaluation stage: a trained network on the held-out test split, its metrics and figures.

The test split is only reported here; no choice of the job reads it (trials, epochs and the
exported model are chosen on validation; see README, "Where the test split is used").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data import PreparedData
from pipeline.ingest.windows import WindowSet
from pipeline.metrics import classification_metrics, confusion_matrix, per_class_metrics
from pipeline.plots import confusion_figure, to_png
from pipeline.tracking import log_png
from pipeline.train import predict_logits


@dataclass(frozen=True)
class TestEvaluation:
    """A network's answers on the test split.

    Attributes:
        probabilities: (n_test, n_classes) softmax outputs.
        metrics: accuracy, macro-F1, balanced accuracy, per-recording accuracy and per-class
            precision/recall, keyed as logged (``test_accuracy``, ...).
        confusion: (n_classes, n_classes) counts, rows = truth.
        correct: test samples classified correctly (the exact count the registry compares).
    """

    probabilities: np.ndarray
    metrics: dict[str, float]
    confusion: np.ndarray
    correct: int

    @property
    def total(self) -> int:
        return int(len(self.probabilities))


def evaluate_on_test(model: torch.nn.Module, data: PreparedData, *, device: torch.device) -> TestEvaluation:
    """Run `model` on the prepared test inputs and score it."""
    probs = torch.softmax(predict_logits(model, data.images["test"], device=device), dim=1).numpy()
    return score_test(probs, data)


def score_test(probs: np.ndarray, data: PreparedData) -> TestEvaluation:
    """Score (n_test, n_classes) probabilities of any classifier (network or baseline) on the test split."""
    test = data.windows["test"]
    n_classes = len(data.classes)
    pred = probs.argmax(1)
    metrics = classification_metrics(test.y, pred, n_classes)
    rec_true, rec_pred = recording_votes(test, probs)
    rec_acc = float(np.mean(rec_true == rec_pred)) if len(rec_true) else 0.0
    logged = {
        "test_accuracy": metrics["accuracy"],
        "test_macro_f1": metrics["macro_f1"],
        "test_balanced_accuracy": metrics["balanced_accuracy"],
        "test_recording_accuracy": rec_acc,
        **{f"test_{k}": v for k, v in per_class_metrics(test.y, pred, data.classes).items()},
    }
    correct = int(np.sum(pred == test.y))
    return TestEvaluation(probs, logged, confusion_matrix(test.y, pred, n_classes), correct)


def log_test_evaluation(evaluation: TestEvaluation, classes: list[str], name: str) -> None:
    """The confusion matrix (JSON and PNG) of the active run; its metrics are logged by the caller."""
    import mlflow

    mlflow.log_dict({"classes": classes, "matrix": evaluation.confusion.tolist()}, "confusion_matrix.json")
    accuracy = evaluation.metrics["test_accuracy"]
    title = f"{name}: test windows (accuracy {accuracy:.3f})"
    log_png(to_png(confusion_figure(evaluation.confusion, classes, title)), "confusion_matrix.png")


def recording_votes(windows: WindowSet, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-recording truth and verdict (class of the mean window probability)."""
    truth, verdict = [], []
    for r in range(len(windows.recording_ids)):
        mask = windows.recording == r
        truth.append(int(np.bincount(windows.y[mask]).argmax()))  # a part's majority label, as the split uses
        verdict.append(int(probs[mask].mean(axis=0).argmax()))
    return np.asarray(truth), np.asarray(verdict)
