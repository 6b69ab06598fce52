"""`pipeline serve` as a real uvicorn process on 127.0.0.1: predictions, micro-batching, errors,
auth, reload under load, CPU fallback; plus the INT8/FP16 variants and the Triton repository."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
import torch
from PIL import Image

from deploy.inferencer import OnnxInferencer
from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx
from deploy.variants import evaluate_variant, make_int8, write_triton_repository
from models import build_model
from pipeline.ingest.windows import cut_windows
from signal2image import CwtTransform, ImageTransform
from tests.conftest import ROOT

KEY = "test-key-123"
FS, LENGTH = 8000, 1024


def _export(path: Path, transform, inputs: torch.Tensor, seed: int, window: tuple[int, int] | None) -> Path:
    torch.manual_seed(seed)
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    meta = ModelMetadata.for_transform(
        ["good", "worn", "broken"], transform, window=window, model=ModelInfo(name=path.stem)
    )
    export_onnx(model, inputs, path, metadata=meta)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3000, n_scales=32)
    windows = np.random.default_rng(0).standard_normal((8, LENGTH)).astype(np.float32)
    signal_a = _export(folder / "signal_a.onnx", cwt, cwt(windows), 0, (LENGTH, 512))
    signal_b = _export(folder / "signal_b.onnx", cwt, cwt(windows), 1, (LENGTH, 512))
    img = ImageTransform(image_size=32)
    pictures = [np.random.default_rng(i).random((40, 56, 3)).astype(np.float32) for i in range(4)]
    image = _export(folder / "image.onnx", img, img(pictures), 2, None)
    return {"signal_a": signal_a, "signal_b": signal_b, "image": image}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, *args: str, key: str | None = KEY) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "PIPELINE_API_KEY"}
        if key:
            env["PIPELINE_API_KEY"] = key
        self.log = open(model.parent / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "serve",
                "--model",
                str(model),
                "--port",
                str(self.port),
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError("the service did not become ready: " + self.output())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=60, **kwargs)

    def metric(self, name: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(
            float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        )


@pytest.fixture(scope="module")
def signal_server(models):
    server = Server(
        models["signal_a"],
        *("--max-wait-ms", "50", "--max-batch", "64", "--max-body-mb", "0.25"),
        *("--model-root", str(models["signal_a"].parent)),  # reload loads the other models from there
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_server(models):
    server = Server(models["image"], "--protect-predict")
    yield server
    server.stop()


def _signal(seed: int, n: int = 3000) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_signal_predictions_equal_the_inferencers_for_json_and_float32_bodies(signal_server, models):
    inferencer = OnnxInferencer(models["signal_a"])
    x = _signal(1)
    expected = inferencer.predict_windows(cut_windows(x[None], LENGTH, 512)).mean(0)
    for response in (
        signal_server.post("/v1/predict/signal", json={"fs": FS, "data": x.tolist()}),
        signal_server.post(
            f"/v1/predict/signal?fs={FS}",
            data=x.tobytes(),
            headers={"content-type": "application/octet-stream"},
        ),
        signal_server.post("/v1/predict/signal", json={"fs": FS, "data": [x.tolist()]}),  # channels x samples
    ):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["windows"] == 4 and len(body["window_labels"]) == 4
        assert np.allclose([body["probabilities"][c] for c in inferencer.classes], expected, atol=1e-5)
        assert body["label"] == inferencer.classes[int(expected.argmax())]
    described = requests.get(signal_server.url + "/v1/model", timeout=10).json()
    assert (
        described["fs"] == FS
        and described["window"] == {"length": LENGTH, "hop": 512}
        and described["classes"] == inferencer.classes
    )
    assert described["providers"] == ["CPUExecutionProvider"]
    assert "CUDA execution provider not usable here" in signal_server.output()  # the CPU fallback says so
    assert requests.get(signal_server.url + "/healthz", timeout=10).json() == {"status": "ok"}


def test_concurrent_requests_are_batched(signal_server):
    before_runs = signal_server.metric("pipeline_batch_requests_count")
    before_requests = signal_server.metric("pipeline_batch_requests_sum")
    with ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(
                lambda i: (
                    signal_server.post(
                        "/v1/predict/signal", json={"fs": FS, "data": _signal(i, LENGTH).tolist()}
                    ).status_code
                ),
                range(32),
            )
        )
    assert codes == [200] * 32
    runs = signal_server.metric("pipeline_batch_requests_count") - before_runs
    served = signal_server.metric("pipeline_batch_requests_sum") - before_requests
    assert served == 32 and runs < 32  # several requests shared a model run
    assert signal_server.metric("pipeline_queue_time_seconds_count") >= 32
    assert signal_server.metric("pipeline_request_latency_seconds_count") >= 32


@pytest.mark.parametrize(
    ("kwargs", "status", "field", "needle"),
    [
        (
            {
                "data": json.dumps({"fs": FS, "data": [1.0, float("nan")] * 600}),
                "headers": {"content-type": "application/json"},
            },
            422,
            "data",
            "NaN or Inf",
        ),
        (
            {
                "data": np.array([1.0, np.inf] * 600, "<f4").tobytes(),
                "headers": {"content-type": "application/octet-stream"},
                "params": {"fs": FS},
            },
            422,
            "data",
            "NaN or Inf",
        ),
        ({"data": b"", "headers": {"content-type": "application/json"}}, 400, "body", "empty"),
        ({"data": b"x" * (300 << 10), "headers": {"content-type": "application/json"}}, 413, "body", "limit"),
        ({"data": b"{nope", "headers": {"content-type": "application/json"}}, 400, "body", "not valid JSON"),
        ({"json": {"fs": FS, "data": [[[1.0, 2.0]]]}}, 422, "data", "channels x samples"),
        ({"json": {"fs": FS, "data": "abc"}}, 422, "data", "list of numbers"),
        ({"json": {"fs": 4000, "data": [0.0] * 3000}}, 422, "fs", "expects 8000 Hz"),
        ({"json": {"fs": "fast", "data": [0.0] * 3000}}, 422, "fs", "sample rate"),
        ({"json": {"data": [0.0] * 3000}}, 422, "body", "'fs'"),
        ({"json": {"fs": FS, "data": [0.0] * 100}}, 422, "data", "at least one window of 1024 samples"),
        (
            {
                "data": b"\x00\x00\x80",
                "headers": {"content-type": "application/octet-stream"},
                "params": {"fs": FS},
            },
            422,
            "body",
            "multiple of 4",
        ),
        (
            {"data": b"\x00" * 4096, "headers": {"content-type": "application/octet-stream"}},
            422,
            "fs",
            "?fs=",
        ),
        (
            {"data": b"1,2,3", "headers": {"content-type": "text/csv"}},
            415,
            "content-type",
            "application/json",
        ),
        (
            {
                "data": b'{"fs": 1' + b"0" * 400 + b', "data": [0.0]}',
                "headers": {"content-type": "application/json"},
            },
            422,
            "fs",
            "sample rate in Hz",
        ),
        (
            {
                "data": b'{"fs": 8000, "data": [1' + b"0" * 400 + b"]}",
                "headers": {"content-type": "application/json"},
            },
            422,
            "data",
            "list of numbers",
        ),
    ],
)
def test_bad_signal_input_gets_a_4xx_naming_the_field(signal_server, kwargs, status, field, needle):
    response = signal_server.post("/v1/predict/signal", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and needle in error["message"]


def test_image_service_auth_predictions_and_bad_images(image_server, models):
    inferencer = OnnxInferencer(models["image"])
    picture = (np.random.default_rng(5).random((48, 60, 3)) * 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(picture).save(png, format="PNG")
    headers = {"content-type": "image/png"}
    assert (
        image_server.post("/v1/predict/image", data=png.getvalue(), headers=headers).status_code == 401
    )  # --protect-predict
    wrong = image_server.post(
        "/v1/predict/image", data=png.getvalue(), headers={**headers, "x-api-key": "nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "X-API-Key"
    ok = image_server.post("/v1/predict/image", data=png.getvalue(), headers={**headers, "x-api-key": KEY})
    assert ok.status_code == 200, ok.text
    expected = inferencer.predict_images([picture.astype(np.float32) / 255])[0]
    assert np.allclose([ok.json()["probabilities"][c] for c in inferencer.classes], expected, atol=1e-5)
    files = [
        ("file", ("a.png", png.getvalue(), "image/png")),
        ("file", ("b.png", png.getvalue(), "image/png")),
    ]
    multi = image_server.post("/v1/predict/image", files=files, headers={"x-api-key": KEY})
    assert multi.status_code == 200 and [r["file"] for r in multi.json()["results"]] == ["a.png", "b.png"]
    bad = image_server.post(
        "/v1/predict/image", data=b"not an image at all", headers={**headers, "x-api-key": KEY}
    )
    assert bad.status_code == 422 and "not a readable image" in bad.json()["error"]["message"]
    other = image_server.post(
        "/v1/predict/signal", json={"fs": FS, "data": [0.0] * 10}, headers={"x-api-key": KEY}
    )
    assert other.status_code == 404 and "/v1/predict/image" in other.json()["error"]["message"]


def test_reload_under_load_loses_no_request(signal_server, models):
    denied = signal_server.post("/v1/admin/reload", json={"model": str(models["signal_b"])})
    assert denied.status_code == 401
    stop = threading.Event()
    codes: list[int] = []

    def client(seed: int) -> None:
        while not stop.is_set():
            codes.append(
                signal_server.post(
                    "/v1/predict/signal", json={"fs": FS, "data": _signal(seed, 2048).tolist()}
                ).status_code
            )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    for target in ("signal_b", "signal_a", "signal_b"):
        r = signal_server.post(
            "/v1/admin/reload", json={"model": str(models[target])}, headers={"x-api-key": KEY}
        )
        assert r.status_code == 200 and r.json()["model"]["source"] == str(models[target])
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert len(codes) > 10 and set(codes) == {200}
    expected = (
        OnnxInferencer(models["signal_b"]).predict_windows(cut_windows(_signal(9)[None], LENGTH, 512)).mean(0)
    )
    now = signal_server.post("/v1/predict/signal", json={"fs": FS, "data": _signal(9).tolist()}).json()
    assert np.allclose(
        [now["probabilities"][c] for c in ("good", "worn", "broken")], expected, atol=1e-5
    )  # the new model answers
    same = signal_server.post(
        "/v1/admin/reload", headers={"x-api-key": KEY}
    )  # empty body: reload the current source
    assert same.status_code == 200 and same.json()["model"]["source"] == str(models["signal_b"])
    refused = signal_server.post(
        "/v1/admin/reload", json={"model": str(models["image"])}, headers={"x-api-key": KEY}
    )
    assert refused.status_code == 422 and "previous model stays" in refused.json()["error"]["message"]
    assert signal_server.metric("pipeline_reloads_total") >= 5


def test_serve_refuses_a_missing_model_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--model", str(tmp_path / "none.onnx")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_int8_is_refused_when_it_loses_accuracy_and_accepted_when_not(models, tmp_path):
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3000, n_scales=32)
    inputs = cwt(np.random.default_rng(3).standard_normal((48, LENGTH)).astype(np.float32)).numpy()
    reference = OnnxInferencer(models["signal_a"])
    labels = reference.predict_inputs(inputs).argmax(1)  # FP32 is right on every input by construction
    int8 = make_int8(models["signal_a"], tmp_path / "a.int8.onnx", inputs[:32])
    assert (
        OnnxInferencer(int8).metadata.variant.kind == "int8"
        and OnnxInferencer(int8).classes == reference.classes
    )
    report = evaluate_variant(
        "int8", models["signal_a"], int8, inputs, labels, tolerance_points=100.0, rounds=1
    )
    assert report.reference_accuracy == 1.0 and report.accepted and report.speedup_batch1 > 0
    # Another network posing as a variant: it disagrees with FP32, so it loses accuracy and is refused.
    impostor = evaluate_variant(
        "int8", models["signal_a"], models["signal_b"], inputs, labels, tolerance_points=1.0, rounds=1
    )
    assert impostor.drop_points > 1.0 and not impostor.accepted and "REFUSED" in str(impostor)


def test_triton_repository_layout(models, tmp_path):
    folder = write_triton_repository(
        models["signal_a"], tmp_path / "repo", name="gearbox-fault", max_batch=16
    )
    config = (folder / "config.pbtxt").read_text()
    assert (
        'name: "gearbox-fault"' in config
        and 'platform: "onnxruntime_onnx"' in config
        and "max_batch_size: 16" in config
    )
    assert re.search(r'name: "input"\s+data_type: TYPE_FP32\s+dims: \[ 3, 32, 32 \]', config)
    assert (
        re.search(r'name: "logits"\s+data_type: TYPE_FP32\s+dims: \[ 3 \]', config)
        and "dynamic_batching" in config
    )
    assert (folder / "labels.txt").read_text().split() == ["good", "worn", "broken"]
    copied = onnx.load(str(folder / "1" / "model.onnx"))
    assert (
        copied.graph.input[0].name == "input"
        and json.loads((folder / "metadata.json").read_text())["transform"]["kind"] == "cwt"
    )


def test_resampling_is_bounded_and_matches_the_models_rate(models):
    from deploy.service import ApiError, signal_windows

    inferencer = OnnxInferencer(models["signal_a"])
    windows = signal_windows(
        inferencer, _signal(4, 1500)[None], 4000.0, resample=True
    )  # 1,500 samples at 4 kHz -> 3,000 at 8 kHz
    assert windows.shape == (4, 1, LENGTH)  # windows of 1,024 every 512 samples
    with pytest.raises(ApiError, match="limited to a factor of 16") as err:
        signal_windows(inferencer, _signal(4, 3000)[None], 100.0, resample=True)
    assert err.value.status == 422 and err.value.field == "fs"
