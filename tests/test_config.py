from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError
from pipeline.tracking import resolve_tracking_uri
from tests.conftest import ROOT, run_cli, write_config


def test_shipped_config_and_defaults_load():
    cfg = load_config(ROOT / "configs" / "gearbox.yaml")
    assert cfg.transform.kind == "cwt"
    assert [s.name for s in cfg.train.strategies] == [
        "scratch",
        "finetune",
        "spectrum_logreg",
        "pixels_logreg",
    ]
    assert [s.pretrained for s in cfg.train.strategies] == [False, True, False, False]
    assert [s.name for s in cfg.train.networks] == ["scratch", "finetune"]
    # one epoch budget for both networks, each stopped on validation (scratch is not cut short)
    assert cfg.train.epochs == 15 and cfg.train.early_stopping == 4
    forda = load_config(ROOT / "configs" / "forda.yaml")
    assert forda.train.augment.time_shift and forda.train.early_stopping == 5
    assert isinstance(load_config(None), JobConfig)


def _error(tmp_path, job, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / "job.yaml", job), overrides)
    return str(info.value)


def test_unknown_key_suggests_the_closest(tmp_path):
    msg = _error(tmp_path, {"trian": {"epochs": 2}})
    assert "unknown key 'trian' in section root; did you mean 'train'?" in msg
    msg = _error(tmp_path, {"train": {"epoch": 2}})
    assert "unknown key 'epoch' in section train; did you mean 'epochs'?" in msg
    msg = _error(tmp_path, {"train": {"strategies": [{"name": "scratch", "lr": 0.1, "lrr": 1}]}})
    assert "in section train.strategies.0" in msg and "did you mean 'lr'?" in msg


def test_wrong_type_and_range_name_key_value_and_rule(tmp_path):
    msg = _error(tmp_path, {"train": {"epochs": "many"}})
    assert "train.epochs" in msg and "'many'" in msg and "integer" in msg
    msg = _error(tmp_path, {"train": {"epochs": 0}})
    assert "train.epochs" in msg and "greater than or equal to 1" in msg and "got 0" in msg
    msg = _error(tmp_path, {"transform": {"kind": "wavelet"}})
    assert "transform.kind" in msg and "'cwt', 'stft', 'grid', 'gaf' or 'image'" in msg


def test_cross_field_rules(tmp_path):
    assert "must be 1" in _error(tmp_path, {"data": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}})
    assert "Nyquist" in _error(tmp_path, {"transform": {"cwt": {"f_max": 9000}}})
    assert "efficientnet_lite0" in _error(tmp_path, {"model": {"backbone": "resnet999"}})
    assert "needs a kind" in _error(tmp_path, {"train": {"strategies": [{"name": "mine", "lr": 0.1}]}})
    assert "repeats" in _error(tmp_path, {"train": {"strategies": [{"name": "scratch", "lr": 0.1}] * 2}})
    assert "not a continuous wavelet" in _error(tmp_path, {"transform": {"cwt": {"wavelet": "db2"}}})
    assert "data.folder" in _error(tmp_path, {"data": {"source": "folder"}})


def test_overrides(tmp_path):
    path = write_config(tmp_path / "job.yaml", {"train": {"strategies": [{"name": "scratch", "lr": 0.1}]}})
    cfg = load_config(path, ["train.epochs=2", "train.strategies.0.lr=0.5", "transform.kind=stft"])
    assert cfg.train.epochs == 2 and cfg.train.strategies[0].lr == 0.5 and cfg.transform.kind == "stft"
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(path, ["train.epoch=3"])


def test_frozen():
    cfg = load_config(None)
    with pytest.raises(ValidationError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_tracking_uri_precedence(workdir, monkeypatch):
    assert resolve_tracking_uri(None) == f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_cli_config_errors_exit_2_without_traceback(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"trian": {}})
    for args in (
        ["run", str(bad)],
        ["run", str(tmp_path / "missing.yaml")],
        ["run", str(bad), "--set", "oops"],
    ):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    (tmp_path / "notyaml.yaml").write_text("a: [1, 2\n")
    proc = run_cli("run", str(tmp_path / "notyaml.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_cli_help_describes_commands(tmp_path):
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0 and all(c in top.stdout for c in ("run", "predict", "ui"))
    run = run_cli("run", "--help", cwd=tmp_path)
    assert run.returncode == 0 and "--set" in run.stdout and "CONFIG" in run.stdout
    assert run_cli("frobnicate", cwd=tmp_path).returncode == 2


def test_review_rules(tmp_path):
    assert "reserved by MLflow" in _error(tmp_path, {"tracking": {"alias": "latest"}})
    assert "reserved by MLflow" in _error(tmp_path, {"tracking": {"alias": "v3"}})
    assert "scramble" in _error(tmp_path, {"train": {"augment": {"vflip": True}}})
    path = write_config(tmp_path / "plain.yaml", {"train": {"epochs": 2}})
    with pytest.raises(ConfigError, match="not in the config file"):
        load_config(path, ["train.strategies.0.lr=0.1"])


def test_unwritable_export_dir_is_a_clear_error_before_training(tmp_path):
    from tests.conftest import TINY_JOB

    (tmp_path / "taken").write_text("a file, not a folder")
    job = {**TINY_JOB, "export": {"dir": str(tmp_path / "taken" / "out")}}
    proc = run_cli("run", str(write_config(tmp_path / "job.yaml", job)), cwd=tmp_path)
    assert (
        proc.returncode == 2 and "export.dir: cannot create" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_strict_types_refuse_booleans_and_strings_for_numbers(tmp_path):
    path = write_config(tmp_path / "job.yaml", {"train": {"epochs": True}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "train.epochs: expected an integer, got True (a boolean)" in str(info.value)
    for override, expected in (
        ("train.epochs=true", "train.epochs: expected an integer"),
        ('train.epochs="3"', "train.epochs: expected an integer, got '3' (a string)"),
        ("train.momentum=true", "train.momentum: expected a number"),
        ("train.nesterov=1", "train.nesterov: expected true or false, got 1"),
        ("model.in_channels=true", "model.in_channels: expected 1 or 3"),
        ("data.cache=0", "data.cache: expected true or false"),
    ):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_config(None, [override])
    # still accepted: an integer for a float, strings for paths, YAML lists for tuples
    cfg = load_config(None, ["transform.cwt.f_max=5000", "export.dir=out", "train.seeds=[0, 1]"])
    assert cfg.transform.cwt.f_max == 5000.0 and cfg.export.dir.name == "out" and cfg.train.seeds == (0, 1)
