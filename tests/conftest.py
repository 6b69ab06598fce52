"""Shared fixtures: small configs, an isolated working directory, restored RNG state."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# A job small enough for one CPU minute: 5 classes x 3 recordings of 0.5 s, 32 px images, one epoch.
# A shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and an ignored signal stays
# ignored across exec: the jobs the tests interrupt with SIGINT (Ctrl-C) would then never see it.
# A handler here is reset to the default in every child, where Python turns SIGINT into
# KeyboardInterrupt again.
signal.signal(signal.SIGINT, signal.default_int_handler)


TINY_JOB = {
    "name": "tiny",
    "data": {
        "simulator": {
            "recordings_per_class": 3,
            "duration_s": 0.5,
            "snr_db": [5, 10],
            "severity": [0.6, 1.0],
        },
        "window": {"length": 1024, "hop": 512},
    },
    "transform": {"kind": "cwt", "image_size": 32, "cwt": {"n_scales": 32, "f_max": 6000}},
    # robustness off: it adds seconds to every test job; tests/test_baselines.py runs it
    "train": {"epochs": 1, "batch_size": 16, "num_threads": 2, "robustness": False},
    "tracking": {"experiment": "tiny", "registered_model": "tiny-fault"},
}


@pytest.fixture(autouse=True)
def _restore_rng():
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    yield
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


@pytest.fixture(autouse=True)
def _restore_mlflow_store():
    """A test that runs a job in-process (`pipeline.cli.main`) points MLflow's global tracking and
    registry URIs at its own store, and MLflow exports them to the environment, where the next
    test's subprocess jobs would inherit them: undo both after every test."""
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        from mlflow.tracking._model_registry import utils as registry_utils

        mlflow.set_tracking_uri(None)
        registry_utils._registry_uri = None
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory with no tracking URI from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def write_config(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as a real process."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def trial_result(strategy: str, val: float, test: float | None = None, **fields: Any) -> Any:
    """A `TrialResult` for report tests: validation `val` (accuracy and macro-F1), test `test`
    (default: `val`), the other fields as given or neutral."""
    from pipeline.report import TrialResult

    test = val if test is None else test
    base = dict(
        strategy=strategy,
        weights="baseline" if fields.get("baseline") else "imagenet",
        seed=0,
        train_fraction=1.0,
        val_accuracy=val,
        val_macro_f1=val,
        test_accuracy=test,
        test_macro_f1=test,
        test_recording_accuracy=test,
        best_epoch=0,
        train_seconds=1.0,
        run_id="r",
    )
    return TrialResult(**{**base, **fields})


def run_job_once(tmp_path_factory: Any, name: str, job: dict) -> tuple[Path, str]:
    """Write `job` into a fresh folder and run it as a real `pipeline run` process: (folder, stdout)."""
    work = tmp_path_factory.mktemp(name)
    proc = run_cli("run", str(write_config(work / "job.yaml", job)), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, proc.stdout
