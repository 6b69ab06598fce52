"""A real `mlflow server` (SQLite backend, local artifacts) on 127.0.0.1: a job with a seed and
data-size sweep logs to it, and the runs, artifacts and registry are read back through the client."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pytest

from pipeline.config import SimulatorConfig
from pipeline.ingest.simulator import GearboxSimulator
from tests.conftest import TINY_JOB, run_cli, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.5)
    yield url, root
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_job_against_a_tracking_server(server, tmp_path):
    url, root = server
    job = copy.deepcopy(TINY_JOB)
    job["data"]["simulator"]["recordings_per_class"] = 5  # 3 training recordings per class: fraction 0.5 -> 2
    job["train"]["seeds"] = [0, 1]
    job["train"]["train_fraction"] = [0.5, 1.0]
    job["tracking"]["experiment"] = "sweep"
    proc = run_cli(
        "run", str(write_config(tmp_path / "sweep.yaml", job)), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": url}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded store
    assert f"MLflow UI:     {url}" in proc.stdout
    # mean +- std over the two seeds in the summary
    assert any(line.startswith("finetune") and "±" in line for line in proc.stdout.splitlines())

    client = mlflow.MlflowClient(url)
    exp = client.get_experiment_by_name("sweep")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    combos = sorted(
        (r.data.tags["strategy"], r.data.tags["train_fraction"], r.data.tags["seed"]) for r in children
    )
    assert combos == sorted(
        (s, f, seed) for s in ("scratch", "finetune") for f in ("0.5", "1") for seed in ("0", "1")
    )
    used = {(r.data.tags["train_fraction"]): r.data.metrics["train_windows_used"] for r in children}
    assert used["0.5"] < used["1"]
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "report.html",
        "report.md",
        "data_size_sweep.png",
        "accuracy_by_strategy.png",
        "comparison.csv",
    } <= names
    page = mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="report.html", tracking_uri=url
    )
    html = open(page, encoding="utf-8").read()
    assert html.count("<tr>") == 1 + 4 and "data_size_sweep.png" in html  # header + strategy x fraction
    with open(
        mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path="comparison.csv", tracking_uri=url
        )
    ) as f:
        assert len(f.read().strip().splitlines()) == 1 + 8

    version = client.get_model_version_by_alias("tiny-fault", "champion")
    assert version.tags["data_hash"] == parent.data.tags["data_hash"]
    rec = GearboxSimulator(SimulatorConfig(duration_s=0.5)).simulate("inner_race", 99)
    np.save(tmp_path / "x.npy", rec.signal[0])
    pred = run_cli(
        "predict",
        "--model",
        "models:/tiny-fault@champion",
        "x.npy",
        "--json",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": url},
    )
    assert pred.returncode == 0, pred.stderr
    assert json.loads(pred.stdout)["label"] in SimulatorConfig().classes


def test_pipeline_ui_serves_the_embedded_store(workdir):
    from pipeline.tracking import ensure_experiment

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    ensure_experiment("ui", tracking_uri=uri, artifact_dir=workdir / "mlartifacts")
    missing = run_cli("ui", "--tracking-uri", f"sqlite:///{workdir / 'nope.db'}", cwd=workdir)
    assert missing.returncode == 2 and "no MLflow store" in missing.stderr
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ui", "--port", str(port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui",
                    timeout=2,
                ) as r:
                    assert json.loads(r.read())["experiment"]["name"] == "ui"
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pipeline ui did not serve: {proc.stdout.read() if proc.stdout else ''}")
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
