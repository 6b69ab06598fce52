"""`torchrun --nproc_per_node=2 -m pipeline run` with gloo on the CPU: real processes, real DDP,
compared with one process running the same config."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import TINY_JOB, write_config


def _run(cfg_path: Path, cwd: Path, processes: int) -> tuple[str, mlflow.MlflowClient, dict, dict]:
    """Run the job in `cwd` (its own MLflow store); stdout, the client, the parent and the child runs."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    proc = subprocess.run(
        [sys.executable, *(launcher if processes > 1 else []), "-m", "pipeline", "run", str(cfg_path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1
    return proc.stdout, client, parents[0], children


def _history(client: mlflow.MlflowClient, run, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_torchrun_two_cpu_processes_train_track_and_export_like_one(tmp_path):
    """Two processes keep the global batch (8 samples each of every 16) and average the gradients, so:

    - linear_probe (cached features: the network that trains is the linear head, no BatchNorm, no
      dropout) computes the same steps as one process: losses equal to 1e-5 (only the order of float
      sums differs), validation and test accuracy identical;
    - finetune trains through BatchNorm, whose statistics come from each rank's 8-sample shard and
      not from the 16-sample batch: close, not equal. Its training losses stay within 20 % (about 5 %
      measured); its accuracies are not compared: on 30 windows near chance after two epochs, the
      running statistics rank 0 gathered from its shards moved validation accuracy from 0.2 to 0.53.

    SGD, not AdamW: Adam's steps hardly depend on the gradient's scale, so summed instead of
    averaged gradients would pass unseen.
    """
    job = copy.deepcopy(TINY_JOB)
    job["data"]["window"]["hop"] = 1024  # 30 training windows: every global batch splits evenly, no padding
    job["train"].update(
        epochs=2,
        num_threads=1,
        optimizer="sgd",
        strategies=[{"name": "finetune", "lr": 1e-2}, {"name": "linear_probe", "lr": 5e-2}],
    )
    job["tracking"]["experiment"] = "ddp"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    cfg_path = write_config(tmp_path / "ddp.yaml", job)
    _, client1, parent1, one = _run(cfg_path, tmp_path / "one", 1)
    out, client2, parent2, two = _run(cfg_path, tmp_path / "two", 2)

    assert "data-parallel: 2 processes (gloo)" in out
    assert out.count("best model:") == 1 and out.count("[2/4] training") == 1  # rank 0 alone reports
    assert (tmp_path / "two" / re.search(r"ONNX model:\s+(\S+)", out).group(1)).is_file()
    assert str(client2.get_model_version_by_alias("tiny-fault", "champion").version) == "1"
    # The same data, split and runs as one process makes them.
    assert parent2.data.tags["data_hash"] == parent1.data.tags["data_hash"]
    for key in ("train_windows", "val_windows", "test_windows"):
        assert parent2.data.metrics[key] == parent1.data.metrics[key]
    assert sorted(two) == sorted(one) == ["finetune", "linear_probe"]
    for name in one:
        assert two[name].data.metrics["train_windows_used"] == one[name].data.metrics["train_windows_used"]
        assert len(_history(client2, two[name], "train_loss")) == 2

    probe1, probe2 = one["linear_probe"], two["linear_probe"]
    loss1, loss2 = _history(client1, probe1, "train_loss"), _history(client2, probe2, "train_loss")
    assert loss2 == pytest.approx(loss1, rel=1e-5) and loss1[1] < loss1[0]  # it did learn something
    assert _history(client2, probe2, "val_accuracy") == _history(client1, probe1, "val_accuracy")
    for key in ("test_accuracy", "test_macro_f1"):
        assert probe2.data.metrics[key] == pytest.approx(probe1.data.metrics[key], abs=1e-12)

    tune1, tune2 = one["finetune"], two["finetune"]
    loss1, loss2 = _history(client1, tune1, "train_loss"), _history(client2, tune2, "train_loss")
    assert loss2 == pytest.approx(loss1, rel=0.2) and all(m > 0 for m in loss2)
