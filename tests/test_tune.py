"""`pipeline tune` on tiny data as real processes: the study in Optuna and MLflow, pruning, the tuned
config, two processes on one study, Ctrl-C and continuing, and bad search spaces."""

from __future__ import annotations

import copy
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.tune import open_storage
from tests.conftest import TINY_JOB, run_cli, write_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def tiny_study(experiment: str, *, epochs: int = 2, pruner: dict | None = None) -> dict:
    """The tiny job with two strategies and a search over the strategy and its rate."""
    job = copy.deepcopy(TINY_JOB)
    job["train"].update(
        {
            "epochs": epochs,
            "num_threads": 1,
            "explain": False,
            # a baseline is not tuned; the tuned config keeps it beside the chosen network
            "strategies": [
                {"name": "scratch", "lr": 0.003},
                {"name": "finetune", "lr": 0.001},
                {"name": "spectrum_logreg"},
            ],
        }
    )
    job["tracking"] = {"experiment": experiment, "registered_model": f"{experiment}-fault"}
    job["tune"] = {
        "space": {
            "strategy": {"choice": ["scratch", "finetune"]},
            "train.strategies[0].lr": {"log": [1e-5, 1e-2]},
            "train.strategies[1].lr": {"log": [1e-5, 1e-2]},
        },
        # pruning from the second trial on: a tiny study shows one
        "pruner": pruner or {"kind": "median", "startup_trials": 1, "warmup_epochs": 0},
        "startup_trials": 3,
    }
    return job


def _children(client: mlflow.MlflowClient, experiment: str) -> tuple[list, list]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.tune_study != ''")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _study(work: Path) -> optuna.Study:
    names = optuna.get_all_study_names(f"sqlite:///{work / 'optuna.db'}")
    assert len(names) == 1
    return optuna.load_study(study_name=names[0], storage=f"sqlite:///{work / 'optuna.db'}")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A 4-trial study on tiny data, run once for the tests of this module."""
    work = tmp_path_factory.mktemp("tune")
    cfg_path = write_config(work / "tiny.yaml", tiny_study("tiny-tune"))
    proc = run_cli("tune", str(cfg_path), "--trials", "4", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, cfg_path, proc.stdout


def test_study_trials_are_child_runs_with_their_states_and_a_pruned_one(tuned):
    work, _, out = tuned
    study = _study(work)
    states = {t.number: t.state for t in study.trials}
    assert len(states) == 4 and optuna.trial.TrialState.PRUNED in states.values()
    assert optuna.trial.TrialState.COMPLETE in states.values()
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    parents, children = _children(client, "tiny-tune")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    by_number = {int(c.data.tags["tune_trial"]): c for c in children}
    assert sorted(by_number) == sorted(states)
    for number, state in states.items():
        child = by_number[number]
        expected = {"COMPLETE": "finished", "PRUNED": "pruned"}[state.name]
        assert child.data.tags["state"] == expected and child.info.status == "FINISHED"
        assert child.data.params["strategy"] in ("scratch", "finetune")
        lr_key = (
            "train.strategies.0.lr" if child.data.params["strategy"] == "scratch" else "train.strategies.1.lr"
        )
        assert float(child.data.params[lr_key]) == pytest.approx(study.trials[number].params[lr_key])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert steps == sorted(study.trials[number].intermediate_values)  # one point per epoch it ran
        assert not any(k.startswith("test_") for k in child.data.metrics)  # the test split is never scored
    pruned = [by_number[n] for n, s in states.items() if s.name == "PRUNED"]
    assert all("best_val_accuracy" not in c.data.metrics for c in pruned)
    best = study.best_trial
    assert parents[0].data.metrics["best_val_accuracy"] == pytest.approx(best.value)
    assert parents[0].data.metrics["trials_pruned"] == len(pruned)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"optimization_history.png", "tiny.tuned.yaml"} <= artifacts
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 4 and all("best " in line for line in lines), out
    assert all(" left" in line for line in lines[:-1]) and lines[-1].split(";")[2].strip().startswith("done")
    assert any("pruned after epoch" in line for line in lines)


def test_tuned_config_loads_and_its_run_reproduces_the_best_validation_score(tuned):
    work, _, _ = tuned
    study = _study(work)
    best = study.best_trial
    tuned_path = work / "tiny.tuned.yaml"
    text = tuned_path.read_text()
    assert f"trial {best.number}, validation val_accuracy {best.value:.4f}" in text.splitlines()[1]
    cfg = load_config(tuned_path)
    names = [s.name for s in cfg.train.strategies]
    assert cfg.tune is None and names == [best.params["strategy"], "spectrum_logreg"]
    index = 0 if best.params["strategy"] == "scratch" else 1
    assert cfg.train.strategies[0].lr == pytest.approx(best.params[f"train.strategies.{index}.lr"])
    proc = run_cli("run", str(tuned_path), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-tune")
    trained = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.strategy = '{best.params['strategy']}'"
    )
    assert len(trained) == 1
    assert trained[0].data.metrics["best_val_accuracy"] == pytest.approx(best.value, abs=1e-9)


def _open_storage_at_once(url: str, barrier) -> None:
    barrier.wait()
    open_storage(url)


def test_processes_creating_a_new_study_database_at_once_all_open_it(tmp_path):
    # Optuna's table creation races: without the retry in open_storage, about one round in four of
    # three processes failed on "UNIQUE constraint failed: alembic_version.version_num".
    ctx = multiprocessing.get_context("fork")
    for round_ in range(6):
        url = f"sqlite:///{tmp_path / f'race-{round_}.db'}"
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_storage_at_once, args=(url, barrier)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0, 0, 0], f"round {round_}"
        assert optuna.get_all_study_summaries(storage=url) == []


def test_two_processes_tune_one_study(tmp_path):
    job = tiny_study("shared", pruner={"kind": "none"})
    cfg_path = write_config(tmp_path / "shared.yaml", job)
    storage = f"sqlite:///{tmp_path / 'shared-study.db'}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # The MLflow store exists, as on a machine that tracks already: two processes creating a new
    # SQLite store's tables at the same instant collide inside MLflow (a race of MLflow's, not the study's).
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "tune", str(cfg_path), "--trials", "3", "--storage", storage],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [{int(n) for n in re.findall(r"^trial (\d+) ", out, re.M)} for out in outs]
    assert all(ran) and not ran[0] & ran[1], outs  # both worked, never on the same trial
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert {t.number for t in study.trials} == ran[0] | ran[1]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 3
    parents, children = _children(mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), "shared")
    assert len(parents) == 1 and len(children) == len(study.trials)
    assert not (tmp_path / "optuna.db").exists()  # --storage replaced the default


def test_ctrl_c_fails_the_running_trial_and_the_same_command_continues_the_study(tmp_path):
    cfg_path = write_config(tmp_path / "stop.yaml", tiny_study("stopped", epochs=4, pruner={"kind": "none"}))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "pipeline", "tune", str(cfg_path), "--trials", "2"]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    opened = None  # the poll opens the new database through open_storage: while the running process
    # is still creating its tables, a plain Optuna open from here races it (UNIQUE on alembic_version)
    while time.monotonic() < deadline:  # stop once the second trial has validated an epoch
        if opened is None and (tmp_path / "optuna.db").exists():
            opened = open_storage(storage)
        names = optuna.get_all_study_names(opened) if opened is not None else []
        trials = optuna.load_study(study_name=names[0], storage=opened).trials if names else []
        if len(trials) == 2 and trials[1].intermediate_values:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "run the same command again to continue it" in err, err
    study = optuna.load_study(study_name=names[0], storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents, children = _children(client, "stopped")
    assert parents[0].info.status == "KILLED"
    stopped = next(c for c in children if c.data.tags["tune_trial"] == "1")
    assert stopped.info.status == "KILLED" and stopped.data.tags["state"] == "failed"

    again = run_cli(*command[3:], cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 finished trial(s) so far" in again.stdout
    study = optuna.load_study(study_name=names[0], storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    parents, children = _children(client, "stopped")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 3


@pytest.mark.parametrize(
    ("space", "needles"),
    [
        ({"train.strategies[0].lrr": {"log": [1e-5, 1e-2]}}, ["tune.space.train.strategies.0.lrr", "'lr'"]),
        (
            {"train.strategies[0].lr": {"log": [1e-2, 1e-5]}},
            ["tune.space.train.strategies.0.lr", "low < high"],
        ),
        (
            {"train.strategies[0].lr": {"log": [1e-5, 30]}},
            ["tune.space.train.strategies.0.lr", "30", "<= 10"],
        ),
        ({"train.strategies[0].lr": {"log": [0, 1e-2]}}, ["tune.space.train.strategies.0.lr", "above 0"]),
        ({"transform.image_size": {"float": [32, 64]}}, ["tune.space.transform.image_size", "int: [32, 64]"]),
        ({"train.strategies[5].lr": {"log": [1e-5, 1e-2]}}, ["strategies.5", "first strategy"]),
        ({"strategy": {"choice": ["scratch", "nope"]}}, ["tune.space.strategy", "'nope'", "finetune"]),
        ({"train.epochs": {"int": [1, 3], "choice": [2]}}, ["tune.space.train.epochs", "exactly one of"]),
        ({"train": {"choice": [1]}}, ["tune.space.train", "is a section"]),
        ({"train.epochs": {"range": [1, 3]}}, ["tune.space.train.epochs", "'range'"]),
    ],
)
def test_bad_search_spaces_name_the_key_the_value_and_the_fix(workdir, capsys, space, needles):
    job = tiny_study("bad")
    job["tune"]["space"] = space
    cfg_path = write_config(workdir / "bad.yaml", job)
    assert main(["tune", str(cfg_path), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle.replace("<= 10", "less than or equal to 10") in err, (needle, err)
    assert not (workdir / "mlflow.db").exists()  # refused before anything was logged


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("45m", 2700), ("1h30m", 5400), ("600", 600)])
def test_timeout_durations(text, seconds):
    from pipeline.tune import parse_duration

    assert parse_duration(text) == seconds


def test_a_bad_timeout_is_a_usage_error(workdir, capsys):
    cfg_path = write_config(workdir / "t.yaml", tiny_study("t"))
    assert main(["tune", str(cfg_path), "--timeout", "2 hours"]) == 2
    assert "--timeout '2 hours'" in capsys.readouterr().err


def test_the_default_space_covers_every_strategy_and_is_valid(workdir):
    from pipeline.tune import default_space, search_space

    job = tiny_study("d")
    del job["tune"]
    cfg = load_config(write_config(workdir / "d.yaml", job))
    space = search_space(cfg)
    assert space == default_space(cfg)
    assert space["strategy"].choice == ("scratch", "finetune")  # networks only
    assert {"train.strategies.0.lr", "train.strategies.1.lr", "train.weight_decay"} <= set(space)
    assert "train.strategies.2.lr" not in space


def test_a_storage_optuna_cannot_open_is_a_usage_error(workdir, capsys):
    cfg_path = write_config(workdir / "s.yaml", tiny_study("s"))
    assert main(["tune", str(cfg_path), "--storage", "sqlite:////no/such/folder/optuna.db"]) == 2
    err = capsys.readouterr().err
    assert "--storage 'sqlite:////no/such/folder/optuna.db'" in err and "sqlite:///optuna.db" in err


def test_hyperband_spans_the_largest_number_of_epochs_searched(workdir):
    from pipeline.tune import make_pruner, search_space

    job = tiny_study("h", pruner={"kind": "hyperband"})
    job["tune"]["space"]["train.epochs"] = {"int": [2, 9]}
    cfg = load_config(write_config(workdir / "h.yaml", job))
    pruner = make_pruner(cfg, search_space(cfg))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 9
