"""Robustness: the line is noisier than the lab. Every trial of a signal job is also scored on
perturbed copies of the validation and test windows, and `train.select_metric: val_robust` can
choose the exported model on them.

Perturbations (seeded, drawn once per job, the same for every trial):

- ``noise_20db``, ``noise_10db``, ``noise_0db``: white noise at that SNR against each window's
  own power (per channel);
- ``shift``: each window shifted in time by 2-10 % of its length either way, the gap filled with
  the signal's edge value (a small misalignment of the acquisition, not a circular roll);
- ``gain_0.5``, ``gain_2``: the amplitude halved or doubled (a sensor gain or mounting change).

The perturbed windows go through the job's own transform, so the networks see them as they would
see such a signal on the line. ``val_robust`` is the mean of the clean validation accuracy and the
mean validation accuracy over the perturbations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PERTURBATIONS: dict[str, tuple[str, float]] = {
    "noise_20db": ("noise", 20.0),
    "noise_10db": ("noise", 10.0),
    "noise_0db": ("noise", 0.0),
    "shift": ("shift", 0.10),
    "gain_0.5": ("gain", 0.5),
    "gain_2": ("gain", 2.0),
}
SPLITS = ("val", "test")


def perturb(x: np.ndarray, kind: str, amount: float, rng: np.random.Generator) -> np.ndarray:
    """(N, C, L) windows -> the same windows perturbed (see the module docstring)."""
    x = np.asarray(x, np.float32)
    if kind == "noise":
        power = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
        sigma = np.sqrt(power / 10 ** (amount / 10))
        return (x + rng.standard_normal(x.shape) * sigma).astype(np.float32)
    if kind == "gain":
        return x * np.float32(amount)
    if kind == "shift":
        length = x.shape[-1]
        out = np.empty_like(x)
        for i in range(len(x)):
            k = int(rng.integers(max(1, int(0.02 * length)), max(2, int(amount * length)) + 1))
            k = k if rng.random() < 0.5 else -k
            if k > 0:
                out[i, :, k:] = x[i, :, :-k]
                out[i, :, :k] = x[i, :, :1]
            else:
                out[i, :, :k] = x[i, :, -k:]
                out[i, :, k:] = x[i, :, -1:]
        return out
    raise ValueError(f"unknown perturbation kind {kind!r}")


@dataclass
class PerturbedSplits:
    """The perturbed windows and their network inputs, by split and perturbation name."""

    windows: dict[str, dict[str, np.ndarray]]
    images: dict[str, dict[str, torch.Tensor]]
    labels: dict[str, np.ndarray]


def perturbed_splits(data: Any, *, seed: int = 0) -> PerturbedSplits:
    """Perturb the validation and test windows of prepared signal `data` and transform them."""
    windows: dict[str, dict[str, np.ndarray]] = {}
    images: dict[str, dict[str, torch.Tensor]] = {}
    for s, split in enumerate(SPLITS):
        windows[split], images[split] = {}, {}
        for p, (name, (kind, amount)) in enumerate(PERTURBATIONS.items()):
            rng = np.random.default_rng([seed, s, p])
            x = perturb(data.windows[split].x, kind, amount, rng)
            windows[split][name] = x
            images[split][name] = data.transform(x)
    return PerturbedSplits(windows, images, {split: data.windows[split].y for split in SPLITS})


def robustness_scores(
    classify: Callable[[np.ndarray, torch.Tensor], np.ndarray], sets: PerturbedSplits
) -> dict[str, dict[str, float]]:
    """Accuracy of `classify(windows, images) -> probabilities` on every perturbed split:
    {split: {perturbation: accuracy}}."""
    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        out[split] = {}
        for name in PERTURBATIONS:
            probs = classify(sets.windows[split][name], sets.images[split][name])
            out[split][name] = float(np.mean(np.asarray(probs).argmax(1) == sets.labels[split]))
    return out


def val_robust(clean_val_accuracy: float, scores: Mapping[str, Mapping[str, float]]) -> float:
    """Mean of the clean validation accuracy and the mean perturbed validation accuracy."""
    perturbed = list(scores["val"].values())
    return 0.5 * (clean_val_accuracy + float(np.mean(perturbed))) if perturbed else clean_val_accuracy


def robust_metrics(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The scores as MLflow metric names: ``robust_val_noise_20db``, ``robust_test_shift``, ..."""
    return {f"robust_{split}_{name}": v for split, by_name in scores.items() for name, v in by_name.items()}
