"""The robustness report: perturbations that do what they say, and the note when val_robust and
plain validation accuracy choose different networks (the job itself: tests/test_baselines.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import TrainConfig
from pipeline.report import TrialResult, aggregate, robustness_rows, robustness_table, selection_note
from pipeline.robustness import PERTURBATIONS, perturb, val_robust
from tests.conftest import trial_result


def _windows(n: int = 8, length: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(length)
    return (
        np.sin(2 * np.pi * 0.01 * t + rng.uniform(0, 6, (n, 1, 1))) * rng.uniform(0.5, 3, (n, 1, 1))
    ).astype(np.float32)


@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0])
def test_noise_is_added_at_the_stated_snr(snr):
    x = _windows()
    noisy = perturb(x, "noise", snr, np.random.default_rng(1))
    measured = 10 * np.log10(np.mean(x**2, axis=-1) / np.mean((noisy - x) ** 2, axis=-1))
    assert np.allclose(measured, snr, atol=0.5), measured


def test_gain_and_shift():
    x = _windows()
    assert np.array_equal(perturb(x, "gain", 2.0, np.random.default_rng(0)), 2 * x)
    x = np.random.default_rng(5).standard_normal((8, 1, 1000)).astype(np.float32)  # no period
    shifted = perturb(x, "shift", 0.1, np.random.default_rng(2))
    for row, orig in zip(shifted[:, 0], x[:, 0]):
        best = [k for k in range(-100, 101) if k and np.allclose(np.roll(orig, k)[120:-120], row[120:-120])]
        assert len(best) == 1 and 20 <= abs(best[0]) <= 100, best  # 2-10 % of 1,000 samples
        k = best[0]
        edge = row[:k] if k > 0 else row[k:]
        assert np.all(edge == (orig[0] if k > 0 else orig[-1]))  # filled with the edge, not wrapped
    assert set(PERTURBATIONS) == {"noise_20db", "noise_10db", "noise_0db", "shift", "gain_0.5", "gain_2"}


def test_val_robust_is_the_mean_of_clean_and_perturbed():
    assert val_robust(0.9, {"val": {"a": 0.5, "b": 0.7}, "test": {}}) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="val_robust needs"):
        TrainConfig(select_metric="val_robust", robustness=False)


def _trial(strategy: str, val: float, robust: float) -> TrialResult:
    return trial_result(
        strategy, val, val_robust=robust, robust_test={"noise_0db": robust - 0.1, "shift": robust}
    )


def test_the_note_says_when_val_robust_would_choose_another_network():
    trials = [_trial("scratch", 0.90, 0.60), _trial("finetune", 0.88, 0.80)]
    note = selection_note(trials, "val_accuracy")
    assert (
        note is not None
        and "validation accuracy picks scratch" in note
        and "val_robust picks finetune" in note
    )
    assert note.endswith("Exported by val_accuracy: scratch (seed 0, train fraction 1).")
    assert selection_note(trials, "val_robust").endswith(
        "Exported by val_robust: finetune (seed 0, train fraction 1)."
    )
    assert (
        selection_note([_trial("scratch", 0.90, 0.85), _trial("finetune", 0.88, 0.80)], "val_accuracy")
        is None
    )
    rows = robustness_rows(aggregate(trials))
    assert rows["finetune"] == {"clean": 0.88, "noise_0db": pytest.approx(0.70), "shift": 0.80}
    headers, table = robustness_table(rows)
    assert headers == ["strategy", "clean", "noise_0db", "shift"] and table[0] == [
        "scratch",
        "0.900",
        "0.500",
        "0.600",
    ]


def test_val_robust_on_an_image_job_is_a_config_error_naming_the_fix(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    from tests.conftest import write_config

    job = {
        "data": {"source": "images", "images": {"path": str(tmp_path)}},
        "transform": {"kind": "image", "image_size": 32},
        "train": {"select_metric": "val_robust"},
    }
    with pytest.raises(ConfigError, match="val_robust needs perturbed signal windows.*val_accuracy"):
        load_config(write_config(tmp_path / "job.yaml", job))
