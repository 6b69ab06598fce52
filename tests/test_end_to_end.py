"""`pipeline run` on a tiny job as a real process, then the store, the ONNX file and `pipeline predict`."""

from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from deploy.inferencer import OnnxInferencer
from models import build_model
from pipeline.config import SimulatorConfig, load_config
from pipeline.ingest.simulator import GearboxSimulator
from pipeline.ingest.split import split_by_recording
from pipeline.ingest.windows import make_windows
from tests.conftest import TINY_JOB, run_cli, run_job_once, write_config


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """Run the tiny job once for all tests of this module."""
    work, out = run_job_once(tmp_path_factory, "job", TINY_JOB)
    return work, work / "job.yaml", out


def _client(work: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")


def test_summary_lists_both_strategies_onnx_registry_and_ui(finished_job):
    work, _, out = finished_job
    for needle in (
        "strategy",
        "val acc",
        "test acc",
        "test macro-F1",
        "train time",
        "scratch",
        "finetune",
        "ONNX model:",
        "alias 'champion'",
        "mlflow ui --backend-store-uri",
    ):
        assert needle in out, needle
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("scratch ", "finetune "))
    }
    assert rows["scratch"][1] == "random" and rows["finetune"][1] == "imagenet"
    for cells in rows.values():
        assert 0.0 <= float(cells[3]) <= 1.0  # test accuracy


def test_mlflow_holds_parent_and_child_runs_with_metrics(finished_job):
    work, _, _ = finished_job
    client = _client(work)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and sorted(r.data.tags["strategy"] for r in children) == ["finetune", "scratch"]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert parent.data.params["train.epochs"] == "1" and parent.data.params["transform.kind"] == "cwt"
    assert parent.data.tags["best_strategy"] in ("scratch", "finetune")
    for child in children:
        for key in ("test_accuracy", "test_macro_f1", "train_seconds"):
            assert 0 <= child.data.metrics[key], key
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0]  # one point per epoch
    tags = parent.data.tags
    assert tags["device"] == "cpu" and len(tags["data_hash"]) == 16 and tags["version.torch"].startswith("2.")
    assert int(tags["size.train"]) == sum(int(tags[f"size.train.{c}"]) for c in SimulatorConfig().classes)
    if (Path(__file__).parents[1] / ".git").exists():
        assert len(tags["git_commit"]) == 40
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "report.md",
        "report.html",
        "comparison.csv",
        "split_report.json",
        "config.json",
        "examples.png",
        "accuracy_by_strategy.png",
        "learning_curves.png",
    } <= artifacts
    uri = f"sqlite:///{work / 'mlflow.db'}"
    report = Path(
        mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path="report.md", tracking_uri=uri
        )
    ).read_text()
    assert "| scratch |" in report and "| finetune |" in report and "![examples.png](examples.png)" in report
    for child in children:
        assert {"confusion_matrix.png", "learning_curves.png", "confusion_matrix.json"} <= {
            a.path for a in client.list_artifacts(child.info.run_id)
        }
        png = Path(
            mlflow.artifacts.download_artifacts(
                run_id=child.info.run_id, artifact_path="confusion_matrix.png", tracking_uri=uri
            )
        )
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 200
    logged = {
        m.name
        for m in client.search_logged_models(experiment_ids=[exp.experiment_id])
        if m.source_run_id == parent.info.run_id
    }
    assert logged == {"model"}  # the PyTorch network is a state dict, not a pickled flavour
    assert {"pytorch-model/state_dict.pt", "pytorch-model/architecture.json"} == {
        a.path for a in client.list_artifacts(parent.info.run_id, "pytorch-model")
    }


def test_onnx_matches_pytorch_on_real_inputs_and_alias_resolves(finished_job):
    work, cfg_path, out = finished_job
    onnx_path = work / re.search(r"ONNX model:\s+(\S+)", out).group(1)
    assert onnx_path.is_file()
    assert onnx_path.with_name("model.signal.onnx").is_file() and "raw-signal model model.signal.onnx" in out
    inferencer = OnnxInferencer(onnx_path, prefer_signal_model=False)  # the image model, Python transform
    meta = inferencer.metadata
    assert list(meta.classes) == list(SimulatorConfig().classes)
    assert meta.transform["kind"] == "cwt" and (meta.window_length, meta.window_hop) == (1024, 512)
    # Real inputs: test windows through the transform rebuilt from the model's metadata.
    cfg = load_config(cfg_path)
    recs = GearboxSimulator(cfg.data.simulator).recordings()
    test = make_windows(split_by_recording(recs, cfg.data.split).test, list(meta.classes), 1024, 512)
    images = inferencer.transform(test.x)
    best = meta.model.strategy
    ckpt = onnx_path.parent / "checkpoints" / f"{best}.best.pt"
    model = build_model("efficientnet_lite0", num_classes=5, pretrained=False)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    got = inferencer.session.run(None, {"input": images.numpy()})[0]
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    # The registry: alias champion points at the version the job reported.
    client = _client(work)
    version = client.get_model_version_by_alias("tiny-fault", "champion")
    assert f"models:/tiny-fault/{version.version}" in out
    assert (
        version.tags["strategy"] == best
        and "data_hash" in version.tags
        and float(version.tags["test_accuracy"]) >= 0
    )
    assert meta.model.version == str(version.version) and meta.model.run_id in out


def test_predict_classifies_signal_files(finished_job):
    work, _, _ = finished_job
    sim = GearboxSimulator(SimulatorConfig(**{**TINY_JOB["data"]["simulator"], "seed": 7}))
    rec = sim.simulate("outer_race", 0)
    np.save(work / "sig.npy", rec.signal[0])
    np.savetxt(work / "sig.csv", rec.signal[0][:, None], delimiter=",", header="accel", comments="")
    for uri in ("models:/tiny-fault@champion", str(next(work.rglob("model.onnx")))):
        proc = run_cli("predict", "--model", uri, "sig.npy", "sig.csv", "--json", cwd=work)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [x["file"] for x in lines] == ["sig.npy", "sig.csv"]
        for x in lines:
            assert x["label"] in SimulatorConfig().classes and x["windows"] == 11
            assert abs(sum(x["probabilities"].values()) - 1) < 1e-5
        assert lines[0]["probabilities"] == pytest.approx(lines[1]["probabilities"], abs=1e-5)


def test_predict_bad_input_exits_2_with_a_clear_message(finished_job):
    work, _, _ = finished_job
    np.save(work / "short.npy", np.zeros(100, np.float32))
    bad = np.ones(4096, np.float32)
    bad[5] = np.nan
    np.save(work / "nan.npy", bad)
    cases = {
        ("short.npy",): "needs at least one window of 1024",
        ("nan.npy",): "NaN or Inf",
        ("missing.npy",): "not found",
        ("nan.npy", "--fs", "48000"): None,
    }
    for args, needle in cases.items():
        proc = run_cli("predict", "--model", "models:/tiny-fault@champion", *args, cwd=work)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        if needle:
            assert needle in proc.stderr
    np.save(work / "ok.npy", np.random.default_rng(0).standard_normal(4096).astype(np.float32))
    proc = run_cli("predict", "--model", "models:/tiny-fault@champion", "ok.npy", "--fs", "48000", cwd=work)
    assert proc.returncode == 2 and "expects 12800 Hz" in proc.stderr
    proc = run_cli("predict", "--model", "models:/no-such-model@champion", "ok.npy", cwd=work)
    assert proc.returncode == 2 and "no-such-model" in proc.stderr and "Traceback" not in proc.stderr


def _run_and_stop(
    tmp_path: Path, *, epochs: int, experiment: str, when: str, stop: int
) -> tuple[Path, int, str]:
    """Start the tiny job as a real process, send `stop` once checkpoint `when` exists;
    (config, exit code, stderr)."""
    job = copy.deepcopy(TINY_JOB)
    job["train"]["epochs"] = epochs
    job["tracking"]["experiment"] = experiment
    cfg_path = write_config(tmp_path / f"{experiment}.yaml", job)
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(cfg_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob(when)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    return cfg_path, proc.returncode, err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_job_is_marked_killed_and_keeps_its_checkpoint(tmp_path, stop):
    _, returncode, err = _run_and_stop(
        tmp_path, epochs=30, experiment="interrupted", when="scratch.pt", stop=stop
    )
    assert returncode == 130 and "KILLED" in err and "Traceback" not in err, err[-3000:]
    ckpt = next(tmp_path.rglob("scratch.pt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["epoch"] >= 0 and "model" in state and "optimizer" in state
    client = _client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])
    assert runs and all(r.info.status == "KILLED" for r in runs)


def test_rerun_on_the_same_data_does_not_take_champion_without_improvement(finished_job):
    work, cfg_path, first = finished_job
    client = _client(work)
    champion = str(client.get_model_version_by_alias("tiny-fault", "champion").version)
    proc = run_cli("run", str(cfg_path), cwd=work)
    assert proc.returncode == 0, proc.stderr
    # Seeded data and training: the same test accuracy, so no improvement.
    assert "alias 'challenger'" in proc.stdout and "does not beat" in proc.stdout
    assert str(client.get_model_version_by_alias("tiny-fault", "champion").version) == champion
    new = client.get_model_version_by_alias("tiny-fault", "challenger")
    assert int(new.version) == int(champion) + 1
    listing = run_cli("models", "list", cwd=work)
    assert listing.returncode == 0 and "challenger" in listing.stdout and "champion" in listing.stdout
    promoted = run_cli("models", "promote", "tiny-fault", str(new.version), cwd=work)
    assert promoted.returncode == 0 and f"-> version {new.version}" in promoted.stdout
    assert str(client.get_model_version_by_alias("tiny-fault", "champion").version) == str(new.version)
    bad = run_cli("models", "promote", "tiny-fault", "99", cwd=work)
    assert bad.returncode == 2 and "no version '99'" in bad.stderr


def test_failed_export_marks_the_job_failed_and_keeps_checkpoints(tmp_path):
    job = copy.deepcopy(TINY_JOB)
    job["tracking"]["experiment"] = "strict"
    job["export"] = {"tolerance": 1e-15}  # stricter than float32 arithmetic can be
    proc = run_cli("run", str(write_config(tmp_path / "strict.yaml", job)), cwd=tmp_path)
    assert proc.returncode == 1 and "export failed" in proc.stderr and "Traceback" not in proc.stderr
    client = _client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("strict").experiment_id])
    status = {r.data.tags.get("strategy", "parent"): r.info.status for r in runs}
    assert status == {"parent": "FAILED", "scratch": "FINISHED", "finetune": "FINISHED"}
    assert {p.name for p in tmp_path.rglob("*.pt")} >= {
        "scratch.pt",
        "finetune.pt",
        "scratch.best.pt",
        "finetune.best.pt",
    }


def test_export_command_writes_a_checked_int8_variant_and_a_triton_repository(finished_job):
    work, cfg_path, _ = finished_job
    proc = run_cli(
        "export",
        str(cfg_path),
        "--model",
        "models:/tiny-fault@champion",
        "--variant",
        "int8",
        "--variant",
        "fp16",
        "--max-accuracy-drop",
        "100",
        "--triton",
        str(work / "triton"),
        "--out",
        str(work / "exported"),
        cwd=work,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(
        r"int8: test accuracy [\d.]+ vs FP32 [\d.]+ .* speed-up on this CPU [\d.]+x at batch 1", proc.stdout
    )
    variant = OnnxInferencer(work / "exported" / "model.int8.onnx")
    assert variant.metadata.variant.kind == "int8" and variant.classes == list(SimulatorConfig().classes)
    assert (work / "triton" / "tiny-fault" / "1" / "model.onnx").is_file()
    nothing = run_cli("export", str(cfg_path), "--model", "models:/tiny-fault@champion", cwd=work)
    assert nothing.returncode == 2 and "nothing to do" in nothing.stderr


def test_resume_continues_the_interrupted_job_in_the_same_runs(tmp_path):
    # scratch finished, finetune after its first epoch
    cfg_path, returncode, _ = _run_and_stop(
        tmp_path, epochs=3, experiment="resumable", when="finetune.pt", stop=signal.SIGINT
    )
    assert returncode == 130
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("resumable").experiment_id
    parent = next(r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED"
    done = run_cli("run", str(cfg_path), "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"resuming run {parent.info.run_id}" in done.stdout
        and "scratch: finished before the interruption" in done.stdout
    )
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    runs = client.search_runs([experiment])
    assert len(runs) == 3  # the same parent and children: nothing started over
    finetune = next(r for r in runs if r.info.run_name == "finetune")
    steps = [m.step for m in client.get_metric_history(finetune.info.run_id, "val_accuracy")]
    assert sorted(set(steps)) == [0, 1, 2] and finetune.data.metrics["test_accuracy"] >= 0
    again = run_cli("run", str(cfg_path), "--resume", cwd=tmp_path)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_an_interrupt_re_raised_as_another_error_still_counts_as_an_interrupt():
    from pipeline.cli import _from_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("checkpoint write failed") from None
    except OSError as exc:
        assert _from_interrupt(exc)  # its context is the interrupt
    assert _from_interrupt(RuntimeError("KeyboardInterrupt: raised in a hook"))
    assert not _from_interrupt(ValueError("bad value"))
