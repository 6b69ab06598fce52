"""Test-time augmentation (`model.tta`) and the operating point (`train.operating_point`): the view
average, the class offset chosen on validation, their ONNX graph, and a job that uses both."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from deploy.inferencer import create_session
from deploy.metadata import ModelMetadata
from deploy.onnx_export import FeatureProjection, export_onnx
from models import (
    VIEWS,
    ViewAverage,
    add_band_profile,
    build_model,
    decision_model,
    head_path,
    scoring_head,
    single_view,
    view_count,
    with_views,
)
from pipeline.config import load_config
from pipeline.data import prepare_data
from pipeline.errors import ConfigError
from pipeline.operating_point import choose_offset, predict_with_offset
from signal2image import ImageTransform
from tests.conftest import run_cli, write_config
from tests.test_images import _picture, make_image_folder, parts_job

BACKBONE = "efficientnet_lite0"


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(BACKBONE, num_classes=3, pretrained=True).eval()  # varied features


@pytest.mark.parametrize("views", ["flips", "dihedral"])
def test_view_average_is_the_mean_of_the_views_logits_and_is_invariant(views):
    net = _net()
    x = torch.rand(5, 3, 32, 32)
    averaged = with_views(net, BACKBONE, views).eval()
    assert isinstance(averaged, ViewAverage) and single_view(averaged) is net
    with torch.no_grad():
        got = averaged(x)
        expected = torch.stack([net(view(x)) for view in VIEWS[views]]).mean(0)
        turned = averaged(x.flip(-1) if views == "flips" else x.transpose(-1, -2).flip(-1))
        plain = net(x)
    assert got.shape == (5, 3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(turned, got, atol=1e-5, rtol=1e-4)  # a flipped part is the same part
    assert not torch.allclose(plain, got, atol=1e-4)  # the views do change the answer of one view
    assert with_views(net, BACKBONE, "none") is net
    assert scoring_head(averaged, BACKBONE) == f"model.{head_path(BACKBONE)}"
    with pytest.raises(ValueError, match="square"):
        with_views(net, BACKBONE, "dihedral")(torch.rand(2, 3, 32, 40))
    decided = decision_model(net, BACKBONE, views, [0.0, 2.5, 0.0]).eval()
    with torch.no_grad():
        torch.testing.assert_close(decided(x), got + torch.tensor([0.0, 2.5, 0.0]), atol=1e-5, rtol=1e-4)
    assert view_count(decided) == len(VIEWS[views]) and view_count(net) == 1
    assert (
        single_view(decided) is net
        and scoring_head(decided, BACKBONE) == f"model.model.{head_path(BACKBONE)}"
    )
    with pytest.raises(ValueError, match="band-profile"):
        with_views(add_band_profile(_net(), rows=32, num_classes=3), BACKBONE, views)


def test_view_average_exports_as_one_onnx_graph_with_averaged_features(tmp_path):
    net = _net()
    averaged = with_views(net, BACKBONE, "dihedral").eval()
    x = torch.rand(6, 3, 32, 32)
    dim = net.get_submodule(head_path(BACKBONE)).in_features
    rng = np.random.default_rng(0)
    projection = FeatureProjection(
        scoring_head(averaged, BACKBONE),
        np.zeros(dim, np.float32),
        rng.standard_normal((dim, 4)).astype("f4"),
    )
    meta = ModelMetadata.for_transform(["a", "b", "c"], ImageTransform(image_size=32), window=None)
    report = export_onnx(averaged, x, tmp_path / "m.onnx", metadata=meta, features=projection)
    assert report.same_predictions and report.n_inputs == 6
    session = create_session(tmp_path / "m.onnx")
    logits, features = session.run(None, {"input": x.numpy()})
    flipped, _ = session.run(None, {"input": x.flip(-2).numpy()})
    assert logits.shape == (6, 3) and features.shape == (6, 4)  # one row per input, not per view
    np.testing.assert_allclose(flipped, logits, atol=1e-4)
    caught: list[torch.Tensor] = []
    hook = net.get_submodule(head_path(BACKBONE)).register_forward_pre_hook(lambda m, a: caught.append(a[0]))
    with torch.no_grad():
        for view in VIEWS["dihedral"]:
            net(view(x))
    hook.remove()
    mean_feature = torch.stack(caught).mean(0).numpy()
    np.testing.assert_allclose(features, mean_feature @ projection.components, atol=1e-3, rtol=1e-3)


def test_views_are_refused_for_signal_jobs_and_without_the_matching_augmentation():
    with pytest.raises(ConfigError, match=r"model\.tta.*signal"):
        load_config(None, ["model.tta=flips"])
    images = ["data.source=elpv", "transform.kind=image", "model.tta=dihedral"]
    with pytest.raises(ConfigError, match=r"never saw.*train\.augment\.vflip: true, train\.augment\.rot90"):
        load_config(None, [*images, "train.augment={hflip: true}"])
    assert load_config(None, [*images, "train.augment={hflip: true, vflip: true, rot90: true}"]).model.tta
    with pytest.raises(ConfigError, match="model.tta"):
        load_config(None, ["model.tta=sideways"])


def test_image_job_with_dihedral_views_selects_and_exports_the_view_average(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    job = parts_job(
        root,
        policy="resize",
        model={"tta": "dihedral"},
        augment={"hflip": True, "vflip": True, "rot90": True},
        operating_point={"label": "blob", "recall": 1.0},
        explain=False,
        strategies=[{"name": "finetune", "lr": 0.001}],
    )
    cfg_path = write_config(tmp_path / "parts.yaml", job)
    proc = run_cli("run", str(cfg_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recall of 'blob'" in proc.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parts").experiment_id])
    child = next(r for r in runs if r.data.tags.get("strategy") == "finetune")
    assert {"best_val_accuracy", "best_val_accuracy_epoch", "class_offset"} <= set(child.data.metrics)
    (onnx_path,) = (tmp_path / "artifacts" / "parts").glob("*/model.onnx")
    info = ModelMetadata.from_onnx(onnx_path).model
    assert info.tta == "dihedral" and info.operating_point.startswith("recall of 'blob' >= 1 on validation")
    assert isinstance(info.class_offsets, tuple) and len(info.class_offsets) == 3
    data = prepare_data(load_config(cfg_path), echo=lambda s: None)
    x = data.images["test"].numpy()
    session = create_session(onnx_path)
    logits = session.run(["logits"], {"input": x})[0]
    turned = session.run(["logits"], {"input": np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))})[0]
    np.testing.assert_allclose(turned, logits, atol=1e-4)  # the line's graph is the view average
    blob = data.classes.index("blob")
    val_pred = session.run(["logits"], {"input": data.images["val"].numpy()})[0].argmax(1)
    assert np.all(val_pred[data.windows["val"].y == blob] == blob)  # the offset is in the graph
    files = []
    for i, label in enumerate(("ok", "blob", "scratch", "ok")):
        files.append(f"new{i}.png")
        Image.fromarray((_picture(label, 50 + i) * 255).astype(np.uint8)).save(tmp_path / files[-1])
    model = "models:/parts-defect@champion"
    pred = run_cli("predict", "--model", model, *files, "--json", cwd=tmp_path)
    why = run_cli("explain", "--model", model, *files, "--json", cwd=tmp_path)
    assert pred.returncode == 0 and why.returncode == 0, pred.stderr + why.stderr
    labels = [json.loads(line)["label"] for line in pred.stdout.splitlines() if line.startswith("{")]
    explained = [json.loads(line)["label"] for line in why.stdout.splitlines() if line.startswith("{")]
    assert len(labels) == 4 and explained == labels  # explain names the class the line's model gives
    job["train"]["operating_point"]["label"] = "dent"
    bad = run_cli("run", str(write_config(tmp_path / "bad.yaml", job)), cwd=tmp_path)
    assert bad.returncode == 2 and "train.operating_point.label 'dent'" in bad.stderr and "blob" in bad.stderr


def test_operating_point_on_a_class_absent_from_validation_is_refused_before_training(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    rows = ["path,label,split"]
    for label in ("ok", "blob", "scratch"):
        for i, path in enumerate(sorted((root / label).iterdir())):
            split = "test" if i % 4 == 3 else "val" if i % 4 == 2 and label != "blob" else "train"
            rows.append(f"{path.relative_to(tmp_path)},{label},{split}")  # no blob in validation
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    job = parts_job(root, policy="resize", operating_point={"label": "blob", "recall": 0.8})
    job["data"] = {
        "source": "images",
        "images": {"manifest": str(tmp_path / "m.csv")},
        "split": {"by": "column"},
    }
    proc = run_cli("run", str(write_config(tmp_path / "parts.yaml", job)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "train.operating_point.label 'blob': the validation split holds no sample of it" in proc.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parts").experiment_id])
    assert not [r for r in runs if "strategy" in r.data.tags]  # refused before any training
    job["train"]["operating_point"]["label"] = "scratch"  # a class validation does hold: the job runs
    ok = run_cli("run", str(write_config(tmp_path / "ok.yaml", job)), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_choose_offset_meets_the_recall_with_the_best_accuracy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    logits = np.stack([np.zeros(400), 1.5 * (y - 0.5) + rng.normal(0, 1, 400) - 0.8], 1)  # class 1 shy
    plain_recall = np.mean(logits[y == 1].argmax(1) == 1)
    point = choose_offset(logits, y, 1, 0.9)
    pred = predict_with_offset(logits, 1, point.offset)
    assert plain_recall < 0.9 <= point.val_recall == np.mean(pred[y == 1] == 1)
    assert point.offset > 0 and point.val_accuracy == np.mean(pred == y)
    for offset in np.linspace(-3, 3, 121):  # no offset reaching the recall is more accurate
        other = predict_with_offset(logits, 1, offset)
        if np.mean(other[y == 1] == 1) >= 0.9:
            assert np.mean(other == y) <= point.val_accuracy + 1e-12
    three = rng.normal(0, 1, (300, 3)) + np.eye(3)[labels := rng.integers(0, 3, 300)]
    point3 = choose_offset(three, labels, 2, 0.95)  # three classes: the sorted sweep equals brute force
    pred3 = predict_with_offset(three, 2, point3.offset)
    assert point3.val_recall == np.mean(pred3[labels == 2] == 2) >= 0.95
    assert point3.val_accuracy == np.mean(pred3 == labels)
    for offset in np.linspace(-4, 6, 401):
        other = predict_with_offset(three, 2, offset)
        if np.mean(other[labels == 2] == 2) >= 0.95:
            assert np.mean(other == labels) <= point3.val_accuracy + 1e-12
    easy = choose_offset(np.stack([np.zeros(4), [-1.0, -2.0, 1.0, 2.0]], 1), np.array([0, 0, 1, 1]), 1, 0.5)
    assert easy.offset == 0.0 and easy.val_accuracy == 1.0  # already met and perfect: left at 0
    with pytest.raises(ValueError, match="no validation sample"):
        choose_offset(logits, np.zeros(400, int), 1, 0.5)
    with pytest.raises(ConfigError, match="recall"):
        load_config(None, ["train.operating_point={label: fault, recall: 0}"])


def test_channels_last_on_the_cpu_is_opt_in():
    from pipeline.train import channels_last

    cpu = torch.device("cpu")
    assert not channels_last(load_config(None).train, cpu)  # bit-reproducible by default
    assert channels_last(load_config(None, ["train.channels_last=true"]).train, cpu)
    assert channels_last(load_config(None).train, torch.device("cuda"))


def test_seed_ensemble_benchmark_reproduces_the_jobs_offsets_and_refuses_bad_arguments(tmp_path):
    """`benchmarks/seed_ensemble.py` reads a finished job's best checkpoints: its per-seed rows give
    the offsets the job logged; bad arguments stop with exit 2 and a message naming them."""
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT

    root = make_image_folder(tmp_path / "imgs")
    job = parts_job(
        root,
        policy="resize",
        operating_point={"label": "blob", "recall": 0.8},
        explain=False,
        seeds=[0, 1],
        strategies=[{"name": "finetune", "lr": 0.001}],
    )
    cfg_path = write_config(tmp_path / "parts.yaml", job)
    proc = run_cli("run", str(cfg_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("parts").experiment_id])
    logged = {
        int(r.data.params["seed"]): r.data.metrics["class_offset"]
        for r in runs
        if r.data.tags.get("strategy") == "finetune"
    }
    (checkpoints,) = (tmp_path / "artifacts" / "parts").glob("*/checkpoints")

    def script(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "benchmarks" / "seed_ensemble.py"), str(cfg_path), *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    read = script("--checkpoints", str(checkpoints), "--strategy", "finetune")
    assert read.returncode == 0, read.stdout + read.stderr
    rows = dict(re.findall(r"^finetune seed (\d) \| ([+-][0-9.]+) \|", read.stdout, re.M))
    assert {int(s): float(o) for s, o in rows.items()} == pytest.approx(logged, abs=1e-3)
    assert "finetune mean of 2 seeds' logits |" in read.stdout
    for args, message in [
        (("--checkpoints", str(checkpoints), "--strategy", "scratch"), "--strategy scratch: not in"),
        (("--checkpoints", str(tmp_path), "--strategy", "finetune"), "no best checkpoint"),
        (
            (
                "--checkpoints",
                str(checkpoints),
                "--strategy",
                "finetune",
                "--set",
                "train.operating_point=null",
            ),
            "no train.operating_point",
        ),
        (
            (
                "--checkpoints",
                str(checkpoints),
                "--strategy",
                "finetune",
                "--set",
                "train.operating_point.label=dent",
            ),
            "train.operating_point.label 'dent': not a class",
        ),
    ]:
        bad = script(*args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
