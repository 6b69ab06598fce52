"""The raw-signal model: the transform as ONNX operators in front of the network (deploy.signal_model).

Parity of the in-graph transform with the Python one for every kind, the merged model against the
Python transform + image model, a client with onnxruntime and numpy only, the service serving a
raw-signal package with torch blocked, the Triton layout in samples, and the metadata rules."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
import torch

from deploy.inferencer import OnnxInferencer
from deploy.metadata import SIGNAL_INPUT_VERSION, MetadataError, ModelInfo, ModelMetadata
from deploy.onnx_export import export_with_reference
from deploy.signal_model import build_signal_model, export_signal_model
from deploy.variants import write_triton_repository
from models import build_model, head_path
from pipeline.errors import ExportError
from signal2image import CwtTransform, GafTransform, GridTransform, StftTransform
from signal2image.onnx_graph import transform_model
from tests.test_service import KEY, _free_port

ROOT = Path(__file__).resolve().parents[1]
FS, LENGTH = 8000.0, 1024


def _windows(n: int, channels: int = 1, length: int = LENGTH, seed: int = 0) -> np.ndarray:
    """Tones and decaying bursts in noise, some windows with a 10x louder burst."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / FS
    x = rng.standard_normal((n, channels, length)) * 0.3
    for i in range(n):
        x[i] += np.sin(2 * np.pi * rng.uniform(100, 3000) * t + rng.uniform(0, 6))
        start = rng.integers(0, length - 200)
        burst = np.exp(-np.arange(200) / 20) * np.sin(2 * np.pi * 2500 * np.arange(200) / FS)
        x[i, :, start : start + 200] += burst * (10 if i % 3 == 0 else 1)
    return x.astype(np.float32)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "transform, sensors, length",
    [
        (CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=32), 1, 1024),
        (
            CwtTransform(
                fs=FS,
                image_size=40,
                n_scales=24,
                f_min=200,
                f_max=3000,
                wavelet="morl",
                signal_norm="window",
                level_db=0.0,
                floor_db=-50,
            ),
            2,
            1000,
        ),
        (
            CwtTransform(
                fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=48, channels=1, mean=(0.4,), std=(0.2,)
            ),
            1,
            1024,
        ),
        (
            StftTransform(
                fs=FS,
                image_size=32,
                nperseg=64,
                hop=16,
                mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225),
            ),
            3,
            1024,
        ),
        (
            StftTransform(fs=FS, image_size=48, nperseg=128, hop=32, window="blackman", signal_norm="window"),
            1,
            700,
        ),
        (GridTransform(fs=FS, image_size=32), 2, 1024),
        (GafTransform(fs=FS, image_size=32, signal_norm="window"), 1, 1000),
    ],
    ids=["cwt", "cwt-morl-2sensors-level", "cwt-grey", "stft-3sensors", "stft-blackman", "grid", "gaf"],
)
def test_the_graph_computes_the_python_transform(transform, sensors, length):
    x = _windows(6, sensors, length)
    x[1] = 0.0  # a constant window: zero std, zero span, -inf dB clamped
    for opset in (17, 18):  # reductions take their axes as an attribute, then as an input
        model = transform_model(transform, length=length, sensors=sensors, opset=opset)
        assert not {n.op_type for n in model.graph.node} & {"DFT", "STFT", "Loop", "Scan"}
        got = _session(model).run(None, {"signal": x})[0]
        want = transform(x).numpy()
        assert got.shape == want.shape
        # float32 rounding: about 2e-6 for a complex wavelet; a real one's coefficients cross zero, where
        # the Python path's FFT rounding is largest relative to the value (1.5e-4 seen, 0.01 dB)
        assert np.abs(got - want).max() < 5e-4 * max(1.0, float(np.abs(want).max()))


def test_the_cwt_at_the_image_resolution_is_close_to_the_full_one():
    """`sampling: output` (what the graph computes) against the full-resolution scalogram with the same
    band-limited filters, resized: sampling each scale's magnitude at its stride loses little."""
    output = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=32)
    plan = output.image_plan(LENGTH)
    assert max(g.stride for g in plan.groups) > 1 and min(g.stride for g in plan.groups) == 1
    x = _windows(8)[:, 0]
    full = torch.nn.functional.interpolate(
        output.magnitude(x)[:, None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False
    )[:, 0]
    sampled = output.image_magnitude(x)
    assert torch.allclose(sampled, full, rtol=0.05, atol=1e-3 * float(full.max()))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A small CWT model exported as image model + raw-signal model beside it (model.signal.onnx)."""
    folder = tmp_path_factory.mktemp("rawsignal")
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=32)
    windows = _windows(48)
    inputs = cwt(windows)
    meta = ModelMetadata.for_transform(
        ["a", "b", "c"], cwt, window=(LENGTH, LENGTH), model=ModelInfo(name="m", version="3")
    )
    path = folder / "model.onnx"
    export_with_reference(
        model,
        inputs[:16],
        path,
        metadata=meta,
        head=head_path("efficientnet_lite0"),
        reference_inputs=inputs,
        transform=cwt,
        window_length=LENGTH,
        dims=8,
        samples=32,
    )
    raw, parity = export_signal_model(path, cwt, windows, inputs.numpy())
    return {"path": path, "raw": raw, "parity": parity, "windows": windows, "inputs": inputs, "cwt": cwt}


def test_the_raw_model_gives_the_image_models_logits_and_the_drift_outputs(package):
    raw, parity = package["raw"], package["parity"]
    assert raw.name == "model.signal.onnx" and parity.agreement == 1.0 and parity.n_windows == 48
    assert parity.max_abs_diff < 1e-3 * max(1.0, parity.logit_scale)
    session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["signal"]
    assert session.get_inputs()[0].shape == ["batch", 1, LENGTH]
    assert [o.name for o in session.get_outputs()] == ["logits", "features", "profile"]
    logits, features, profile = session.run(None, {"signal": package["windows"][:5]})
    image = OnnxInferencer(package["path"], prefer_signal_model=False)
    assert image.transform is not None and not image.takes_signal
    reference = image.run_inputs(package["inputs"][:5].numpy())
    assert np.allclose(features, reference.features, atol=1e-3)
    assert np.allclose(profile, package["inputs"][:5].numpy().mean(axis=(1, 3)), atol=1e-4)
    meta = ModelMetadata.from_onnx(raw)
    assert meta.takes_signal and meta.input_shape == ("batch", 1, LENGTH) and meta.version == 2
    assert meta.transform == package["cwt"].to_dict() and meta.drift is not None  # the transform described


def test_the_inferencer_prefers_the_raw_model_and_predicts_the_same(package):
    served = OnnxInferencer(package["path"])
    assert served.takes_signal and served.path == package["raw"] and served.transform is None
    python = OnnxInferencer(package["path"], prefer_signal_model=False)
    signal = _windows(6, seed=4).transpose(1, 0, 2).reshape(1, -1)  # one recording of 6 windows
    got, want = served.predict_signal(signal, fs=FS), python.predict_signal(signal, fs=FS)
    assert got.window_labels == want.window_labels and got.label == want.label
    assert np.allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=1e-4)
    with pytest.raises(Exception, match="takes windows, not network inputs"):
        served.predict_inputs(package["inputs"][:1].numpy())


CLIENT = """
import json, sys
import numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes = json.loads(meta["classes"])
windows = np.load(sys.argv[2])
logits = session.run(["logits"], {"signal": windows})[0]
from deploy.inferencer import OnnxInferencer  # the project's own path: no torch either
verdict = OnnxInferencer(sys.argv[3]).predict_windows(windows)
print(json.dumps({"classes": [classes[i] for i in logits.argmax(1)],
                  "inferencer": [classes[i] for i in verdict.argmax(1)],
                  "torch": "torch" in sys.modules, "kind": json.loads(meta["input_kind"])}))
"""


def test_a_client_with_onnxruntime_and_numpy_only_gets_the_same_classes(package, tmp_path):
    windows = _windows(12, seed=7)
    np.save(tmp_path / "w.npy", windows)
    (tmp_path / "client.py").write_text(CLIENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.no_torch",
            "tests.client_runner",
            str(tmp_path / "client.py"),
            str(package["raw"]),
            str(tmp_path / "w.npy"),
            str(package["path"]),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    python = OnnxInferencer(package["path"], prefer_signal_model=False)  # the Python transform's path
    expected = [python.classes[i] for i in python.predict_windows(windows).argmax(1)]
    assert out["torch"] is False and out["kind"] == "signal"
    assert out["classes"] == expected and out["inferencer"] == expected


def test_the_service_serves_a_raw_signal_package_with_torch_blocked(package):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_API_KEY": KEY}
    log = open(package["path"].parent / f"serve-{port}.log", "w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.no_torch",
            "pipeline",
            "serve",
            "--model",
            str(package["path"]),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert proc.poll() is None, log.seek(0) or log.read()
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        model = requests.get(url + "/v1/model", timeout=10).json()
        assert model["input_kind"] == "signal" and model["input_shape"] == ["batch", 1, LENGTH]
        signal = _windows(4, seed=9).transpose(1, 0, 2).reshape(1, -1)
        reply = requests.post(
            url + "/v1/predict/signal",
            json={"data": signal.tolist(), "fs": FS},
            headers={"X-API-Key": KEY},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        want = OnnxInferencer(package["path"], prefer_signal_model=False).predict_signal(signal, fs=FS)
        assert reply.json()["label"] == want.label
        bad = requests.post(
            url + "/v1/predict/signal",
            json={"data": [[1.0, 2.0]], "fs": FS},
            timeout=30,
            headers={"X-API-Key": KEY},
        )
        assert bad.status_code == 422 and "1024" in bad.text  # too short: named, with the window length
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_triton_repository_takes_raw_windows(package, tmp_path):
    folder = write_triton_repository(package["path"], tmp_path / "repo", name="m")
    config = (folder / "config.pbtxt").read_text()
    assert re.search(r'name: "signal"\s+data_type: TYPE_FP32\s+dims: \[ 1, 1024 \]', config)
    assert re.search(r'name: "features"\s+data_type: TYPE_FP32\s+dims: \[ 8 \]', config)
    assert re.search(r'name: "profile"\s+data_type: TYPE_FP32\s+dims: \[ 32 \]', config)
    assert json.loads((folder / "metadata.json").read_text())["input_kind"] == "signal"
    image = write_triton_repository(package["path"], tmp_path / "img", name="m", prefer_signal_model=False)
    assert re.search(
        r'name: "input"\s+data_type: TYPE_FP32\s+dims: \[ 3, 32, 32 \]', (image / "config.pbtxt").read_text()
    )


def test_metadata_round_trips_and_the_version_rule():
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=32)
    image_input = ModelMetadata.for_transform(["a", "b"], cwt, window=(LENGTH, 512), channels=("x",))
    raw = image_input.as_signal_input()
    for meta in (image_input, raw):  # (read back, a file without a drift reference says so)
        assert dataclasses.replace(ModelMetadata.from_props(meta.to_onnx_props()), drift_note="") == meta
    assert image_input.version == 1 and "input_kind" not in image_input.to_json()  # old services read it
    assert raw.version == SIGNAL_INPUT_VERSION and raw.to_json()["input_kind"] == "signal"
    assert raw.image_shape == image_input.input_shape == ("batch", 3, 32, 32)
    newer = {**raw.to_onnx_props(), "metadata_version": "3"}
    with pytest.raises(MetadataError, match="newer than this pipeline's 2"):
        ModelMetadata.from_props(newer)
    with pytest.raises(MetadataError, match="input_kind 'pixels'"):
        ModelMetadata.from_props({**raw.to_onnx_props(), "input_kind": '"pixels"'})


def test_models_the_graph_cannot_express_are_refused_with_the_reason(package):
    old = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=32, sampling="full")
    with pytest.raises(ExportError, match="sampling 'full'"):
        build_signal_model(onnx.load(str(package["path"])), old)
    raw = onnx.load(str(package["raw"]))
    with pytest.raises(ExportError, match="image-input model of a signal model"):
        build_signal_model(raw, package["cwt"])


def test_without_torch_a_model_that_needs_the_python_transform_is_refused_with_the_fix(package, tmp_path):
    alone = tmp_path / "model.onnx"  # the image model without its raw-signal model
    alone.write_bytes(package["path"].read_bytes())
    script = tmp_path / "load.py"
    script.write_text(
        "import sys\nfrom deploy.inferencer import OnnxInferencer\n"
        "from signal2image.errors import UserError\n"
        "try:\n    OnnxInferencer(sys.argv[1])\nexcept UserError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.no_torch", "tests.client_runner", str(script), str(alone)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "needs the Python transform" in done.stdout and "--signal-model" in done.stdout
