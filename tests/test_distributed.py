"""`torchrun --nproc_per_node=2 -m pipeline run` with gloo on the CPU: real processes, real DDP."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import mlflow

from tests.conftest import TINY_JOB, write_config


def test_torchrun_two_cpu_processes_train_track_and_export_like_one(tmp_path):
    job = copy.deepcopy(TINY_JOB)
    job["train"]["epochs"] = 2
    job["train"]["num_threads"] = 1
    job["tracking"]["experiment"] = "ddp"
    cfg_path = write_config(tmp_path / "ddp.yaml", job)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pipeline",
            "run",
            str(cfg_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "data-parallel: 2 processes (gloo)" in out
    assert out.count("best model:") == 1 and out.count("[2/4] training") == 1  # rank 0 alone reports
    onnx_path = tmp_path / re.search(r"ONNX model:\s+(\S+)", out).group(1)
    assert onnx_path.is_file()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and sorted(r.info.run_name for r in children) == [
        "finetune",
        "scratch",
    ]  # as one process makes them
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        history = client.get_metric_history(child.info.run_id, "train_loss")
        assert [m.step for m in history] == [0, 1] and all(m.value > 0 for m in history)
        assert 0 <= child.data.metrics["test_accuracy"] <= 1 and child.data.metrics["train_windows_used"] > 0
    assert str(client.get_model_version_by_alias("tiny-fault", "champion").version) == "1"
