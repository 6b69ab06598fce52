"""Classical baselines beside the networks: each beats chance on a tiny synthetic set, runs as a child
run of a real job with the networks' test metrics, and the summary says plainly when one beats every
network on validation (and not otherwise)."""

from __future__ import annotations

import copy
import csv
import importlib.util
import io
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline.baselines import check_applicable, fit_baseline
from pipeline.config import StrategyConfig, TrainConfig
from pipeline.errors import UserError
from pipeline.report import TrialResult, baseline_verdict
from tests.conftest import TINY_JOB, run_cli, run_job_once, trial_result, write_config

BASELINE_JOB = copy.deepcopy(TINY_JOB)
BASELINE_JOB["name"] = "tiny-baselines"
BASELINE_JOB["train"].update(
    explain=False,
    robustness=True,
    select_metric="val_robust",  # the robustness report and the choice it makes, in the same job
    strategies=[
        {"name": "finetune", "lr": 0.001},
        {"name": "spectrum_logreg", "bins": 17},
        {"name": "pixels_logreg"},
    ],
)
BASELINE_JOB["tracking"] = {"experiment": "tiny-baselines", "registered_model": "tiny-baselines"}


def _tones(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes: a tone at 0.05 or at 0.12 cycles per sample, random phase, in strong noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    t = np.arange(512)
    f = np.where(y == 0, 0.05, 0.12)[:, None]
    x = np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (n, 1))) + rng.standard_normal((n, 512)) * 2.0
    return x[:, None, :].astype(np.float32), y


def test_spectrum_baseline_beats_chance_and_chooses_c_on_validation():
    train, val, test = _tones(120, 0), _tones(60, 1), _tones(200, 2)
    fitted = fit_baseline(StrategyConfig(name="spectrum_logreg"), train, val, n_classes=2, seed=0)
    assert fitted.kind == "spectrum_logreg" and fitted.c in fitted.grid
    assert fitted.grid[fitted.c] == max(fitted.grid.values()) == fitted.val_accuracy
    accuracy = np.mean(fitted.predict_proba(test[0]).argmax(1) == test[1])
    assert accuracy > 0.9, accuracy  # chance is 0.5
    # scaled by 1000 and z-scored per window: the same answer
    scaled = fit_baseline(
        StrategyConfig(name="spectrum_logreg"),
        (train[0] * 1000, train[1]),
        (val[0] * 1000, val[1]),
        n_classes=2,
        seed=0,
        window_norm=True,
    )
    assert np.mean(scaled.predict_proba(test[0] * 1000).argmax(1) == test[1]) > 0.9


def test_pixels_baseline_beats_chance_and_keeps_every_class_column():
    rng = np.random.default_rng(3)

    def images(n: int) -> tuple[torch.Tensor, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        for i, label in enumerate(y):  # a brighter quadrant tells the class
            x[i, :, (label // 2) * 16 : (label // 2) * 16 + 16, (label % 2) * 16 : (label % 2) * 16 + 16] += (
                1.0
            )
        return torch.from_numpy(x), y

    train, val, test = images(90), images(45), images(150)
    fitted = fit_baseline(StrategyConfig(name="pixels_logreg", pool=4), train, val, n_classes=4, seed=0)
    probs = fitted.predict_proba(test[0])
    assert probs.shape == (150, 4) and np.allclose(probs[:, 3], 0)  # class 3 never in training
    assert np.mean(probs.argmax(1) == test[1]) > 0.8  # chance is 1/3


def test_baseline_config_rules():
    assert (
        StrategyConfig(name="spectrum_logreg").is_baseline
        and StrategyConfig(name="spectrum_logreg").lr is None
    )
    with pytest.raises(ValueError, match="needs a learning rate"):
        StrategyConfig(name="finetune")
    with pytest.raises(ValueError, match="all baselines"):
        TrainConfig(strategies=[{"name": "spectrum_logreg"}, {"name": "base2", "kind": "pixels_logreg"}])
    with pytest.raises(UserError, match="pixels_logreg"):
        check_applicable(StrategyConfig(name="spectrum_logreg"), is_image=True)
    check_applicable(StrategyConfig(name="pixels_logreg"), is_image=True)


@pytest.mark.skipif(importlib.util.find_spec("aeon") is not None, reason="aeon is installed here")
def test_minirocket_without_aeon_says_how_to_install_it():
    with pytest.raises(UserError, match=r'pip install -e "\.\[peers\]"'):  # before any training
        check_applicable(StrategyConfig(name="minirocket"), is_image=False)
    with pytest.raises(UserError, match=r'pip install -e "\.\[peers\]"'):
        fit_baseline(StrategyConfig(name="minirocket"), _tones(20, 0), _tones(10, 1), n_classes=2, seed=0)


@pytest.mark.skipif(importlib.util.find_spec("aeon") is not None, reason="aeon is installed here")
def test_a_job_with_minirocket_but_no_aeon_exits_2_before_training(tmp_path):
    job = copy.deepcopy(BASELINE_JOB)
    job["train"]["strategies"] = [{"name": "finetune", "lr": 0.001}, {"name": "minirocket"}]
    proc = run_cli("run", str(write_config(tmp_path / "job.yaml", job)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'minirocket' needs aeon" in proc.stderr and "Traceback" not in proc.stderr
    assert "epoch 1/1" not in proc.stdout  # nothing trained


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="the peers extra is not installed")
def test_minirocket_beats_chance():
    fitted = fit_baseline(
        StrategyConfig(name="minirocket"), _tones(120, 0), _tones(60, 1), n_classes=2, seed=0
    )
    test = _tones(200, 2)
    assert np.mean(fitted.predict_proba(test[0]).argmax(1) == test[1]) > 0.8


def _trial(strategy: str, val: float, test: float, baseline: bool) -> TrialResult:
    return trial_result(strategy, val, test, baseline=baseline)


def test_the_baseline_sentence_appears_when_a_baseline_beats_every_network_and_not_otherwise():
    nets = [_trial("scratch", 0.94, 0.941, False), _trial("finetune", 0.93, 0.936, False)]
    beaten = baseline_verdict([*nets, _trial("spectrum_logreg", 0.97, 0.972, True)])
    assert beaten is not None
    assert "spectrum_logreg beats every network" in beaten and "0.970 against 0.940" in beaten
    assert "scratch" in beaten and "0.972" in beaten and "0.941" in beaten
    assert baseline_verdict([*nets, _trial("spectrum_logreg", 0.93, 0.99, True)]) is None  # chosen on val
    assert baseline_verdict([*nets, _trial("spectrum_logreg", 0.94, 0.99, True)]) is None  # a tie is no win
    assert baseline_verdict(nets) is None


@pytest.fixture(scope="module")
def baseline_job(tmp_path_factory):
    """The tiny job with two baselines beside one network, run once as a real process."""
    return run_job_once(tmp_path_factory, "baselines", BASELINE_JOB)


def _artifact(work: Path, run_id: str, name: str) -> str:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, tracking_uri=uri)
    ).read_text()


def test_a_job_runs_its_baselines_as_child_runs_beside_the_network(baseline_job):
    tmp_path, out = baseline_job
    comparison = out.split("robustness: test accuracy")[0]  # the first table; the robustness one follows
    rows = {
        line.split()[0]: line.split()
        for line in comparison.splitlines()
        if line.startswith(("finetune ", "spectrum_logreg ", "pixels_logreg "))
    }
    assert set(rows) == {"finetune", "spectrum_logreg", "pixels_logreg"}
    assert rows["spectrum_logreg"][1] == "baseline" and rows["finetune"][1] == "imagenet"
    assert rows["finetune"][-4:-2] == ["1", "(1)"] and rows["spectrum_logreg"][-3] == "-"  # epochs (best)
    assert "best model:    finetune" in out  # a baseline is never exported
    # the robustness table: every strategy under each perturbation
    assert "robustness: test accuracy with noise, time shifts and gain changes" in out
    header = next(line for line in out.splitlines() if line.startswith("strategy ") and "noise_0db" in line)
    assert header.split() == [
        "strategy",
        "clean",
        "noise_20db",
        "noise_10db",
        "noise_0db",
        "shift",
        "gain_0.5",
        "gain_2",
    ]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-baselines")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["strategy"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(children) == {"finetune", "spectrum_logreg", "pixels_logreg"}
    val = {}
    for name in ("spectrum_logreg", "pixels_logreg"):
        child = children[name]
        assert child.info.status == "FINISHED" and child.data.tags["baseline"] == "true"
        for key in (
            "test_accuracy",
            "test_macro_f1",
            "test_balanced_accuracy",
            "train_seconds",
            "val_accuracy",
        ):
            assert 0 <= child.data.metrics[key], key
        assert float(child.data.params["C"]) > 0
        assert (
            0 <= child.data.metrics["robust_test_noise_0db"] <= 1 and "robust_val_shift" in child.data.metrics
        )
        assert {"confusion_matrix.png", "confusion_matrix.json", "c_grid.json"} <= {
            a.path for a in client.list_artifacts(child.info.run_id)
        }
        val[name] = child.data.metrics["val_accuracy"]
    assert val["spectrum_logreg"] > 0.3  # five classes: chance is 0.2
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def artifact(name: str) -> str:
        path = mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path=name, tracking_uri=uri
        )
        return Path(path).read_text()

    table = list(csv.DictReader(io.StringIO(artifact("comparison.csv"))))
    assert {r["strategy"]: r["baseline"] for r in table} == {
        "finetune": "False",
        "spectrum_logreg": "True",
        "pixels_logreg": "True",
    }
    page = _artifact(tmp_path, parent.info.run_id, "report.html")
    assert "<td>spectrum_logreg</td><td>baseline</td>" in page
    assert 0 <= children["finetune"].data.metrics["val_robust"] <= 1
    assert "<h2>Robustness: test accuracy with noise, time shifts and gain changes</h2>" in page
    network_val = children["finetune"].data.metrics["val_robust"]  # the job chooses by val_robust
    val = {n: children[n].data.metrics["val_robust"] for n in val}
    beaten = max(val.values()) > network_val
    assert ("beats every network" in out) == beaten and ("beats every network" in page) == beaten


SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _chromium() -> str | None:
    """The browser binary (Debian's chromium package, which `.ci/run` installs), not its wrapper."""
    for candidate in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_report_html_renders_in_a_real_browser(baseline_job):
    """report.html opened in Chromium (driven by Playwright): the table with the baselines' rows,
    every figure decoded, and the baseline sentence where the summary printed it. The screenshot is
    kept in test-artifacts/."""
    browser_path = _chromium()
    if browser_path is None or importlib.util.find_spec("playwright") is None:
        if os.environ.get("PIPELINE_REQUIRE_BROWSER"):  # .ci/run sets it
            pytest.fail("CI installs chromium and playwright (.ci/run); neither may be missing there")
        pytest.skip("chromium or playwright is not installed (.ci/run installs both)")
    from playwright.sync_api import sync_playwright

    work, out = baseline_job
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-baselines")
    parent = next(
        r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags
    )
    page_file = work / "report.html"
    page_file.write_text(_artifact(work, parent.info.run_id, "report.html"))
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_file.as_uri())
            comparison = page.locator("table").first
            cells = comparison.locator("tbody tr td:first-child").all_inner_texts()
            assert cells == ["finetune", "spectrum_logreg", "pixels_logreg"]
            assert comparison.locator("thead th").count() == 10
            robust = page.locator("table.robustness tbody tr td:first-child").all_inner_texts()
            assert robust == cells
            sizes = page.evaluate(
                "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            assert len(sizes) >= 4 and all(done and w > 100 and h > 100 for done, w, h in sizes), sizes
            text = page.locator("body").inner_text()
            assert ("beats every network" in text) == ("beats every network" in out)
            page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (SCREENSHOTS / "report.png").stat().st_size > 10_000
