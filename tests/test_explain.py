"""Explanations on the Hz x time axes: target layers, attribution, axes, `pipeline explain`, the job's
per-class maps, and the resonance property only the simulator can give."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from models import build_model, explain_layer, list_backbones
from pipeline.cli import main
from pipeline.config import SimulatorConfig, load_config
from pipeline.explain import (
    attribute,
    band_fraction,
    band_profile,
    explanation_figure,
    floor_baseline,
    image_axes,
    normalise_maps,
    uniform_fraction,
)
from pipeline.ingest.simulator import GearboxSimulator
from pipeline.train import seed_everything
from signal2image import CwtTransform, GridTransform, StftTransform
from signal2image.prepare import cut_windows
from tests.conftest import TINY_JOB, run_cli, write_config

# ----------------------------------------------------------------------------- target layers


def test_every_backbone_has_a_target_layer_with_an_8x8_map_at_64_px():
    for name in list_backbones():
        model = build_model(name, num_classes=3, pretrained=False).eval()
        layer = model.get_submodule(explain_layer(name))  # raises when the path does not exist
        shapes: list[torch.Size] = []
        hook = layer.register_forward_hook(lambda module, args, out, seen=shapes: seen.append(out.shape))
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64))
        hook.remove()
        assert tuple(shapes[0][-2:]) == (8, 8), (name, explain_layer(name), shapes)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18", "mobilenet_v3_small"])
def test_gradcam_one_forward_backward_at_64_px(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=3, pretrained=False)
    attr = attribute(model, torch.randn(2, 3, 64, 64), [0, 2], backbone=backbone, method="gradcam")
    assert attr.maps.shape == (2, 64, 64) and attr.map_rows == 8 and attr.bands == 8
    assert attr.layer == explain_layer(backbone)
    assert (attr.maps >= 0).all() and np.allclose(attr.maps.sum(axis=(1, 2)), 1)


def test_integrated_gradients_at_input_resolution():
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", num_classes=3, pretrained=False, in_channels=1)
    base = floor_baseline((0.5,), (0.5,), 1)
    attr = attribute(
        model, torch.randn(2, 1, 32, 32), [1, 1], backbone="mobilenet_v3_small", method="ig", baseline=base
    )
    assert attr.maps.shape == (2, 32, 32) and attr.layer == "input" and attr.map_rows == 32
    assert np.allclose(attr.maps.sum(axis=(1, 2)), 1) and attr.bands == 8


# ----------------------------------------------------------------------------- axes and profiles


def test_cwt_rows_are_the_transform_frequencies_on_a_log_axis():
    tf = CwtTransform(fs=12800, image_size=64, f_min=200, f_max=6000, n_scales=64)
    axes = image_axes(tf, 2048)
    assert axes.has_hz and axes.log and axes.col_unit == "s"
    assert np.allclose(axes.row_centres, tf.frequencies_)  # one image row per scale, lowest first
    assert np.all(np.diff(axes.row_edges) > 0) and axes.col_edges[-1] == pytest.approx(2048 / 12800)
    # Resized (32 rows from 64 scales): each image row covers two scales, still in increasing order.
    small = image_axes(CwtTransform(fs=12800, image_size=32, f_min=200, f_max=6000, n_scales=64), 1024)
    assert small.row_edges[0] < 200 < small.row_edges[1] and small.row_edges[-2] < 6000 < small.row_edges[-1]
    assert np.allclose(small.row_centres, np.sqrt(tf.frequencies_[0::2] * tf.frequencies_[1::2]))


def test_stft_rows_are_linear_and_images_without_frequency_are_pixels():
    tf = StftTransform(fs=12800, image_size=64, nperseg=128, hop=32)
    axes = image_axes(tf, 2048)
    assert axes.has_hz and not axes.log
    step = 65 / 64 * 12800 / 128  # 65 FFT bins of 100 Hz resized to 64 rows
    assert np.allclose(np.diff(axes.row_edges)[1:-1], step)
    assert axes.row_edges[0] == 0 and axes.row_edges[-1] == 6400  # clipped to 0 and fs/2
    grid = image_axes(GridTransform(fs=12800, image_size=32), 1024)
    assert grid.row_unit == "px" and grid.col_unit == "px" and list(grid.row_edges[[0, -1]]) == [0, 32]


def test_band_profile_sums_to_one_and_band_fraction_of_uniform_is_the_uniform_fraction():
    axes = image_axes(CwtTransform(fs=12800, image_size=64, f_min=200, f_max=6000, n_scales=64), 1024)
    rng = np.random.default_rng(0)
    heat = normalise_maps(rng.random((64, 64)))
    for bands in (8, 16, 64):
        profile = band_profile(heat, axes, bands)
        assert len(profile) == bands and sum(b["relevance"] for b in profile) == pytest.approx(1)
        assert profile[0]["hz_low"] < 200 and profile[-1]["hz_high"] > 6000
        assert all(a["hz_high"] == b["hz_low"] for a, b in zip(profile, profile[1:]))
    uniform = np.full((64, 64), 1 / 64**2)
    assert band_fraction(uniform, axes, 2400, 3600) == pytest.approx(uniform_fraction(axes, 2400, 3600))
    peaked = np.zeros((64, 64))
    peaked[np.argmin(abs(axes.row_centres - 3000))] = 1
    assert band_fraction(peaked, axes, 2400, 3600) == 1.0


def test_figure_has_hz_and_seconds_axes():
    tf = CwtTransform(fs=12800, image_size=32, f_min=200, f_max=6000, n_scales=32)
    axes = image_axes(tf, 1024)
    heat = normalise_maps(np.random.default_rng(0).random((32, 32)))
    fig = explanation_figure(np.zeros((32, 32)), heat, axes, band_profile(heat, axes, 4), "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_ylabel() == "frequency (Hz)" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "time in window (s)"
    assert ax.get_ylim() == pytest.approx((axes.row_edges[0], axes.row_edges[-1]))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["200", "500", "1k", "2k", "5k"]


def test_train_explain_is_strictly_typed(tmp_path):
    path = write_config(tmp_path / "c.yaml", TINY_JOB)
    assert load_config(path).train.explain is True
    assert load_config(path, ["train.explain=false"]).train.explain is False
    with pytest.raises(Exception, match="train.explain"):
        load_config(path, ["train.explain=maybe"])


# ----------------------------------------------------------------------------- the job and the CLI

EXPLAIN_JOB = copy.deepcopy(TINY_JOB)
EXPLAIN_JOB["name"] = "tiny-explain"
EXPLAIN_JOB["train"]["strategies"] = [{"name": "scratch", "lr": 0.003}]
EXPLAIN_JOB["tracking"] = {"experiment": "tiny-explain", "registered_model": "tiny-explain"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One tiny job (one strategy) as a real process; its store, parent run and a signal file."""
    work = tmp_path_factory.mktemp("explain-job")
    proc = run_cli("run", str(write_config(work / "tiny.yaml", EXPLAIN_JOB)), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "explained" in proc.stdout
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny-explain").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    sim = GearboxSimulator(SimulatorConfig(duration_s=0.5, seed=7))
    np.save(work / "sig.npy", sim.simulate("outer_race", 0).signal[0])
    return work, uri, client, parent, child


def test_job_logs_per_class_maps_and_the_report_shows_them(job):
    work, uri, client, parent, child = job
    files = {a.path for a in client.list_artifacts(child.info.run_id, "explain")}
    assert "explain/band_profiles.json" in files
    doc = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=child.info.run_id, artifact_path="explain/band_profiles.json", tracking_uri=uri
            )
        ).read_text()
    )
    assert doc["method"] == "gradcam" and doc["layer"] == "_blocks.4" and doc["map_rows"] == 4  # 32 px
    assert doc["axis"] == "Hz" and len(doc["band_edges"]) == 5
    assert set(doc["classes"]) | set(doc["no_correct_sample"]) == set(SimulatorConfig().classes)
    for label, entry in doc["classes"].items():
        assert 1 <= entry["samples"] <= 32 and f"explain/{label}.png" in files
        assert sum(b["relevance"] for b in entry["bands"]) == pytest.approx(1)
    if doc["classes"]:
        assert "explain/classes.png" in files
    assert child.data.metrics["explain_seconds"] >= 0
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "best_confusion_matrix.png" in parent_files
    html = Path(
        mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path="report.html", tracking_uri=uri
        )
    ).read_text()
    assert "class='side'" in html and 'alt="best_confusion_matrix.png"' in html
    if doc["classes"]:
        assert 'alt="best_explanations.png"' in html and "best_explanations.png" in parent_files


def test_explain_cli_writes_png_with_hz_bands_and_json(job, capsys):
    work, uri, *_ = job
    out = work / "out"
    args = ["explain", "--model", "models:/tiny-explain@champion", str(work / "sig.npy")]
    assert main([*args, "--out", str(out), "--json", "--tracking-uri", uri]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["method"] == "gradcam" and result["windows"] == 11 and result["label"] == result["target"]
    png = Path(result["png"])
    assert png.parent == out and png.is_file()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 500
    bands = result["bands"]
    assert len(bands) == 4 and sum(b["relevance"] for b in bands) == pytest.approx(1)
    assert bands[0]["hz_low"] < 200 < bands[0]["hz_high"] and bands[-1]["hz_high"] <= 6400  # f_max 6000
    # Without --json: one line naming the top bands in Hz; with --method ig and --target.
    assert main([*args, "--out", str(out), "--tracking-uri", uri, "--method", "ig", "--target", "wear"]) == 0
    line = capsys.readouterr().out
    assert "relevance for 'wear'" in line and "Hz" in line and (out / "sig.ig.png").is_file()


def test_explain_accepts_runs_uri_and_run_id_and_refuses_a_trial_run(job, capsys, monkeypatch):
    work, uri, _, parent, child = job
    monkeypatch.chdir(work)  # the PNGs go to the default ./explanations
    run_id = parent.info.run_id
    for model in (f"runs:/{run_id}", run_id):
        code = main(["explain", "--model", model, str(work / "sig.npy"), "--json", "--tracking-uri", uri])
        assert code == 0
        assert json.loads(capsys.readouterr().out)["file"].endswith("sig.npy")
    code = main(["explain", "--model", child.info.run_id, str(work / "sig.npy"), "--tracking-uri", uri])
    assert code == 2 and "--model" in capsys.readouterr().err
    for bad, field in ((["--target", "nope"], "--target"), (["--max-windows", "0"], "--max-windows")):
        code = main(["explain", "--model", run_id, str(work / "sig.npy"), "--tracking-uri", uri, *bad])
        assert code == 2 and field in capsys.readouterr().err
    code = main(["explain", "--model", run_id, str(work / "missing.npy"), "--tracking-uri", uri])
    assert code == 2 and "missing.npy" in capsys.readouterr().err


def test_explain_refuses_a_bare_onnx_file_as_a_real_process(job):
    work = job[0]
    onnx = next(work.rglob("model.onnx"))
    proc = run_cli("explain", "--model", str(onnx), "sig.npy", cwd=work)
    assert proc.returncode == 2
    assert "no gradients" in proc.stderr and "models:/" in proc.stderr and "run id" in proc.stderr


# ----------------------------------------------------------------------------- the resonance property

BEARING = ("healthy", "outer_race", "inner_race")
CONCENTRATION = 1.5  # relevance inside resonance +- 20 % must be at least this many times the uniform share


def _windows(sim, indices):
    xs, ys, res = [], [], []
    for c, label in enumerate(BEARING):
        for i in indices:
            rec = sim.simulate(label, i)
            w = cut_windows(rec.signal, 1024, 1024)
            xs.append(w)
            ys += [c] * len(w)
            res += [rec.condition["resonance_hz"]] * len(w)  # drawn per recording by the simulator
    return np.concatenate(xs), np.array(ys), np.array(res)


def _resonance_shares(maps, axes, resonance):
    inside = np.mean([band_fraction(m, axes, 0.8 * r, 1.2 * r) for m, r in zip(maps, resonance)])
    uniform = np.mean([uniform_fraction(axes, 0.8 * r, 1.2 * r) for r in resonance])
    return float(inside), float(uniform)


def test_relevance_of_bearing_faults_concentrates_in_the_recordings_resonance_band():
    """EfficientNet-Lite0 (ImageNet weights, installed with the package), fine-tuned 2 epochs on CWT
    images of simulated bearing faults; Grad-CAM of the correctly classified fault windows must put
    clearly more relevance inside each recording's resonance +- 20 % than a uniform map would."""
    torch.set_num_threads(2)
    sim = GearboxSimulator(
        SimulatorConfig(
            classes=BEARING,
            recordings_per_class=9,
            duration_s=1.0,
            snr_db=(10.0, 20.0),
            severity=(0.8, 1.0),
            resonance_hz=(1500.0, 4000.0),  # +- 20 % stays inside the analysed 200-6000 Hz
            seed=3,
        )
    )
    tf = CwtTransform(fs=12800, image_size=64, floor_db=-40.0, f_min=200, f_max=6000, n_scales=64)
    x_train, y_train, _ = _windows(sim, range(0, 6))
    x_test, y_test, resonance = _windows(sim, range(6, 9))  # other recordings, other resonances
    train, test = tf(x_train), tf(x_test)
    seed_everything(0)
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    order = torch.Generator().manual_seed(0)
    labels = torch.from_numpy(y_train)
    for _ in range(2):
        model.train()
        perm = torch.randperm(len(train), generator=order)
        for k in range(0, len(perm), 32):
            batch = perm[k : k + 32]
            loss = torch.nn.functional.cross_entropy(model(train[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(test).argmax(1).numpy()
    ok = np.flatnonzero((pred == y_test) & (y_test > 0))  # correct outer/inner race windows
    assert len(ok) >= 24, f"the model is too weak for the test: {len(ok)} correct fault windows"
    axes = image_axes(tf, 1024)
    attr = attribute(model, test[ok], y_test[ok], backbone="efficientnet_lite0", method="gradcam")
    inside, uniform = _resonance_shares(attr.maps, axes, resonance[ok])
    print(f"Grad-CAM relevance inside resonance +- 20 %: {inside:.3f}, uniform map: {uniform:.3f}")
    for c in (1, 2):
        mine = y_test[ok] == c
        share, flat_share = _resonance_shares(attr.maps[mine], axes, resonance[ok][mine])
        print(f"  {BEARING[c]}: {share:.3f} (uniform {flat_share:.3f}) over {mine.sum()} windows")
    assert inside >= CONCENTRATION * uniform, (inside, uniform)
    # Control: the same computation on uniform maps gives the uniform share, which fails the check.
    flat, flat_uniform = _resonance_shares(normalise_maps(np.ones_like(attr.maps)), axes, resonance[ok])
    assert flat == pytest.approx(flat_uniform) and flat < CONCENTRATION * flat_uniform
    # And it follows each recording's own resonance: another recording's band gets less.
    drawn = np.unique(resonance[ok])
    farthest = np.array([max(drawn, key=lambda q: abs(np.log(q / r))) for r in resonance[ok]])
    elsewhere, _ = _resonance_shares(attr.maps, axes, farthest)
    print(f"inside the farthest other test recording's resonance +- 20 %: {elsewhere:.3f}")
    assert elsewhere < inside


def test_explain_refuses_uris_reaching_outside_the_store(tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for model in ("runs:/0123abcd/../../etc/passwd", "no/such/dir.pt"):
        assert main(["explain", "--model", model, "x.npy", "--tracking-uri", store]) == 2
        err = capsys.readouterr().err
        assert "model" in err and ("'..'" in err or "not a run id" in err), err
