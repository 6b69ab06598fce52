"""Classical baselines beside the networks: what a one-second linear model reaches on the same split.

Every baseline turns a sample into a fixed feature vector, standardises it (fitted on the training
split) and fits scikit-learn's logistic regression for each C of `C_GRID`, keeping the C with the
best validation score (`train.select_metric`); the test split is only scored afterwards, as for the
networks.

- ``spectrum_logreg`` (signals): the log10 Welch power spectrum of each window and channel,
  `bins` frequencies (segments of 2 x (bins - 1) samples, half overlapping; scipy.signal.welch).
- ``minirocket`` (signals): aeon's MiniRocket features (10,000 kernels, the published peer of
  Dempster et al. 2021) with the same logistic regression; aeon is in the optional ``peers`` extra
  (it pins numpy and pandas below the versions the core installs).
- ``pixels_logreg`` (images, or signal images): the network input average-pooled to `pool` x `pool`.

Windows are z-scored one by one first when the job's transform does that too (``data.normalise:
window``), so a baseline sees the signal as the networks do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.config import StrategyConfig
from pipeline.errors import UserError
from pipeline.metrics import classification_metrics

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
SIGNAL_KINDS = ("spectrum_logreg", "minirocket")


@dataclass
class BaselineFit:
    """A fitted baseline: its chosen C and validation scores, and how to score new samples."""

    kind: str
    c: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    predict_proba: Callable[[np.ndarray], np.ndarray]
    grid: dict[float, float]  # C -> validation score (select_metric)


def check_applicable(strategy: StrategyConfig, *, is_image: bool) -> None:
    """Signal baselines need signal windows, and `minirocket` needs aeon: checked before training.

    Raises:
        UserError: `spectrum_logreg` or `minirocket` on a job of images; `minirocket` without aeon.
    """
    if is_image and strategy.kind in SIGNAL_KINDS:
        raise UserError(
            f"train.strategies: {strategy.name!r} ({strategy.kind}) needs signal windows, but this job "
            "classifies images; use kind 'pixels_logreg' as the images' baseline"
        )
    if strategy.kind == "minirocket":
        _minirocket_class()


def _minirocket_class() -> Any:
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ImportError:
        raise UserError(
            "train.strategies: 'minirocket' needs aeon, which is not installed; "
            'pip install -e ".[peers]" (or drop the minirocket strategy)'
        ) from None
    return MiniRocket


def _zscore_windows(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return (x - mean) / np.where(std > 0, std, 1.0)


def spectrum_features(x: np.ndarray, bins: int) -> np.ndarray:
    """(N, C, L) windows -> (N, C * bins) log10 Welch power spectra."""
    from scipy.signal import welch

    nperseg = min(x.shape[-1], 2 * (bins - 1))
    _, power = welch(np.asarray(x, np.float64), nperseg=nperseg, axis=-1)
    return np.log10(power + 1e-12).reshape(len(x), -1)


def pixel_features(images: torch.Tensor, pool: int) -> np.ndarray:
    """(N, C, H, W) network inputs -> (N, C * pool * pool) average-pooled pixels."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(images.float(), pool)
    return pooled.reshape(len(images), -1).numpy().astype(np.float64)


class _MiniRocket:
    """aeon's MiniRocket transform, fitted on the training windows."""

    def __init__(self, seed: int) -> None:
        self.transform = _minirocket_class()(random_state=seed)

    def fit(self, x: np.ndarray) -> _MiniRocket:
        self.transform.fit(np.asarray(x, np.float64))
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.transform.transform(np.asarray(x, np.float64)), np.float64)


def featurizer(
    strategy: StrategyConfig, *, seed: int, train: Any, window_norm: bool
) -> Callable[[Any], np.ndarray]:
    """The feature map of a baseline, fitted on `train` where it needs fitting (MiniRocket).

    Signal kinds take (N, C, L) window arrays; ``pixels_logreg`` takes (N, C, H, W) tensors."""
    kind = strategy.kind
    if kind == "pixels_logreg":
        return lambda images: pixel_features(images, strategy.pool)

    def prepared(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return _zscore_windows(x) if window_norm else x

    if kind == "spectrum_logreg":
        return lambda x: spectrum_features(prepared(x), strategy.bins)
    rocket = _MiniRocket(seed).fit(prepared(train))
    return lambda x: rocket(prepared(x))


def fit_baseline(
    strategy: StrategyConfig,
    train: tuple[Any, np.ndarray],
    val: tuple[Any, np.ndarray],
    *,
    n_classes: int,
    seed: int,
    select_metric: str = "val_accuracy",
    balanced: bool = False,
    window_norm: bool = False,
) -> BaselineFit:
    """Fit `strategy` (a baseline kind) on `train`, choosing C on `val`.

    Args:
        train, val: (samples, labels): (N, C, L) windows for the signal kinds, (N, C, H, W) network
            inputs for ``pixels_logreg``.
        balanced: class weights inversely proportional to the class counts (`train.class_weighting`).
        window_norm: z-score each window first (the job's transform does).
    """
    start = time.perf_counter()
    features = featurizer(strategy, seed=seed, train=train[0], window_norm=window_norm)
    return fit_logreg(
        str(strategy.kind),
        features,
        train,
        val,
        n_classes=n_classes,
        seed=seed,
        select_metric=select_metric,
        balanced=balanced,
        start=start,
    )


def fit_logreg(
    kind: str,
    features: Callable[[Any], np.ndarray],
    train: tuple[Any, np.ndarray],
    val: tuple[Any, np.ndarray],
    *,
    n_classes: int,
    seed: int,
    select_metric: str = "val_accuracy",
    balanced: bool = False,
    start: float | None = None,
) -> BaselineFit:
    """The logistic regression of every baseline on `features` of the samples: standardised on
    `train`, C chosen on `val` (`start`: when the fit began, for its time; default now)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter() if start is None else start
    x_train, x_val = features(train[0]), features(val[0])
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    y_train, y_val = np.asarray(train[1]), np.asarray(val[1])
    key = "macro_f1" if select_metric == "val_macro_f1" else "accuracy"
    best: tuple[float, float, Any, dict[str, float]] | None = None
    grid: dict[float, float] = {}
    for c in C_GRID:
        model = LogisticRegression(
            C=c, max_iter=2000, class_weight="balanced" if balanced else None, random_state=seed
        )
        model.fit(x_train, y_train)
        scores = classification_metrics(y_val, model.predict(x_val), n_classes)
        grid[c] = scores[key]
        if best is None or scores[key] > best[0]:
            best = (scores[key], c, model, scores)
    assert best is not None
    _, c, model, scores = best
    classes = list(model.classes_)

    def predict_proba(samples: Any) -> np.ndarray:
        probs = model.predict_proba(scaler.transform(features(samples)))
        out = np.zeros((len(probs), n_classes))
        out[:, classes] = probs  # a class absent from a small training subset gets probability 0
        return out

    return BaselineFit(
        kind=kind,
        c=c,
        val_accuracy=scores["accuracy"],
        val_macro_f1=scores["macro_f1"],
        seconds=time.perf_counter() - start,
        predict_proba=predict_proba,
        grid=grid,
    )
