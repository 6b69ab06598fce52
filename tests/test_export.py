from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy.inferencer import OnnxInferencer, choose_providers, cuda_usable
from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx, same_decisions
from models import build_model
from pipeline.errors import ExportError, UserError
from pipeline.train import select_device
from signal2image import ImageTransform, StftTransform


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    transform = StftTransform(fs=8000, image_size=32, nperseg=64, hop=16)
    windows = np.random.default_rng(0).standard_normal((6, 512)).astype(np.float32)
    inputs = transform(windows)
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    # trained on channel 0 of two-channel recordings: a two-channel signal is read by index
    meta = ModelMetadata.for_transform(["a", "b", "c"], transform, window=(512, 256), file_channels=2)
    report = export_onnx(model, inputs, path, metadata=meta)
    return model, transform, windows, inputs, path, report


def test_export_has_metadata_dynamic_batch_and_parity(exported):
    model, transform, windows, inputs, path, report = exported
    assert report.same_predictions and report.max_abs_diff <= 1e-4 and report.n_inputs == 6
    inf = OnnxInferencer(path)
    assert inf.classes == ["a", "b", "c"] and inf.window_length == 512 and inf.fs == 8000
    assert inf.transform.to_dict() == transform.to_dict()
    with torch.no_grad():
        expected = torch.softmax(model(inputs), 1).numpy()
    for n in (1, 5):  # any batch size
        assert np.allclose(inf.predict_windows(windows[:n]), expected[:n], atol=1e-5)
    pred = inf.predict_signal(np.random.default_rng(1).standard_normal(2048), fs=8000)
    assert pred.label in inf.classes and len(pred.window_labels) == 7


def test_a_float_tie_is_not_a_changed_decision():
    expected = np.array([[0.0, 1e-9, -1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
    flipped = expected.copy()
    flipped[0] = [1e-9, 0.0, -1.0]  # a tie within the accepted difference may go either way
    assert same_decisions(flipped, expected, margin=2e-4)
    wrong = expected.copy()
    wrong[1] = [0.0, 2.0, 0.0]  # a decisive input that changed class is caught
    assert not same_decisions(wrong, expected, margin=2e-4)
    assert not same_decisions(flipped, expected, margin=0.0)  # without a margin every flip counts
    assert same_decisions(np.zeros((0, 3)), np.zeros((0, 3)), margin=1e-4)


class BatchDependent(torch.nn.Module):
    """Python control flow the ONNX trace cannot capture: the export is wrong for other batch sizes."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out if x.shape[0] == 2 else out + 1.0


def test_export_refuses_an_unfaithful_model(exported, tmp_path):
    model, _, _, inputs, path, _ = exported
    meta = ModelMetadata.from_onnx(path)
    with pytest.raises(ExportError, match="max \\|logit diff\\| 1.00e\\+00"):
        export_onnx(BatchDependent(model), inputs, tmp_path / "m.onnx", metadata=meta)


def test_inferencer_rejects_foreign_models_and_wrong_lengths(exported, tmp_path):
    _, _, windows, inputs, path, _ = exported
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    torch.onnx.export(model, (inputs[:1],), str(tmp_path / "plain.onnx"), dynamo=False, input_names=["input"])
    with pytest.raises(UserError, match="lacks this project's metadata"):
        OnnxInferencer(tmp_path / "plain.onnx")
    with pytest.raises(UserError, match="expects 512"):
        OnnxInferencer(path).predict_windows(windows[:, :100])


def test_cuda_paths_fall_back_to_the_cpu():
    if torch.cuda.is_available() or cuda_usable():
        pytest.skip("a GPU is present: the fallback is not exercised")
    assert choose_providers("cuda") == ["CPUExecutionProvider"]
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    assert select_device("cuda").type == "cpu" and select_device("auto").type == "cpu"


def test_inferencer_selects_the_trained_channel_and_refuses_non_onnx_files(exported, tmp_path):
    _, _, _, _, path, _ = exported
    inf = OnnxInferencer(path)
    signal = np.random.default_rng(3).standard_normal((2, 2048)).astype(np.float32)
    assert inf.predict_signal(signal).probabilities == pytest.approx(
        inf.predict_signal(signal[0]).probabilities
    )
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        OnnxInferencer(tmp_path / "junk.onnx")


def test_the_inference_benchmark_times_a_given_export(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=4, pretrained=False, in_channels=1).eval()
    path = tmp_path / "trained.onnx"
    meta = ModelMetadata.for_transform(
        ["a", "b", "c", "d"],
        ImageTransform(image_size=32, channels=1, mean=(0.5,), std=(0.5,)),
        model=ModelInfo(backbone="efficientnet_lite0"),
    )
    export_onnx(model, torch.randn(4, 1, 32, 32), path, metadata=meta)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "inference_speed.py"),
            "--model",
            str(path),
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trained.onnx (efficientnet_lite0) at 1 x 32 x 32" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.strip().startswith("threads")]
    assert len(rows) == 4 and all("torch eager" in r and "ORT/torch" in r and "INT8/FP32" in r for r in rows)
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "inference_speed.py"),
            "--model",
            str(tmp_path / "none.onnx"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert bad.returncode != 0 and "no such file" in bad.stderr


def test_pytorch_model_is_logged_as_a_state_dict_and_loads_back_with_the_same_logits(workdir):
    import json

    import mlflow

    from pipeline.export import PYTORCH_ARTIFACTS, load_pytorch_model, log_pytorch_model
    from pipeline.tracking import ensure_experiment, tracked_run, use_store

    uri = f"sqlite:///{workdir / 'store.db'}"
    use_store(uri)
    exp = ensure_experiment("t", tracking_uri=uri, artifact_dir=workdir / "art")
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=False, in_channels=1, dropout=0.3)
    model.eval()
    architecture = {"backbone": "efficientnet_lite0", "num_classes": 3, "in_channels": 1, "dropout": 0.3}
    with tracked_run(experiment_id=exp) as run:
        log_pytorch_model(model, {**architecture, "classes": ["a", "b", "c"]})
    run_id = run.info.run_id
    client = mlflow.MlflowClient(uri)
    names = {a.path for a in client.list_artifacts(run_id, PYTORCH_ARTIFACTS)}
    assert names == {f"{PYTORCH_ARTIFACTS}/state_dict.pt", f"{PYTORCH_ARTIFACTS}/architecture.json"}
    assert not client.search_logged_models(experiment_ids=[exp])  # no pickled MLflow flavour
    folder = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=PYTORCH_ARTIFACTS, tracking_uri=uri, dst_path=str(workdir / "dl")
    )
    state = torch.load(f"{folder}/state_dict.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert (
        json.loads((workdir / "dl" / PYTORCH_ARTIFACTS / "architecture.json").read_text())["in_channels"] == 1
    )
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for source in (run_id, f"runs:/{run_id}/{PYTORCH_ARTIFACTS}"):
            loaded = load_pytorch_model(source, tracking_uri=uri)
            assert not loaded.training and torch.equal(loaded(x), expected)
    with pytest.raises(UserError, match="holds no state_dict.pt"):
        load_pytorch_model(f"runs:/{run_id}/{PYTORCH_ARTIFACTS}/architecture.json", tracking_uri=uri)
