"""The catalogue of what the inference service refuses: every bad input to `pipeline serve`, each with
its HTTP status, the field its JSON error names (``{"error": {"field": ..., "message": ...}}``) and
the words of the message that say the fix.

One real uvicorn process on 127.0.0.1 per configuration, shared by its cases:

- ``signal``: a signal model with one named channel, an API key, --max-body-mb 0.25,
  --max-windows 8, --body-timeout-s 1, --model-root (the folder of the test models);
- ``protected``: the same model with --protect-predict and --resample;
- ``image``: an image model without an API key, --max-windows 4, --max-body-mb 1.

Then the start-up refusals of `pipeline serve` itself (exit code 2).
A new refusal in deploy/service.py belongs here.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx
from models import build_model
from signal2image import CwtTransform, ImageTransform
from tests.conftest import ROOT
from tests.test_service import KEY, Server

FS, LENGTH, HOP = 8000, 1024, 512
JSON = {"content-type": "application/json"}
OCTET = {"content-type": "application/octet-stream"}
WITH_KEY = {"x-api-key": KEY}


def _export(path: Path, transform, inputs, **meta) -> Path:
    torch.manual_seed(0)
    net = build_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    metadata = ModelMetadata.for_transform(
        ["good", "worn", "broken"], transform, model=ModelInfo(name=path.stem), **meta
    )
    export_onnx(net, inputs, path, metadata=metadata)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> dict[str, Path]:
    """root/: signal.onnx (one channel named "accel"), image.onnx, junk.onnx (text), link.onnx (a
    symlink out of root); outside/: outside.onnx (a good model outside the root)."""
    base = tmp_path_factory.mktemp("catalogue")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3000, n_scales=32)
    windows = np.random.default_rng(0).standard_normal((4, LENGTH)).astype(np.float32)
    signal = _export(root / "signal.onnx", cwt, cwt(windows), window=(LENGTH, HOP), channels=("accel",))
    img = ImageTransform(image_size=32)
    image = _export(root / "image.onnx", img, img([np.zeros((40, 40), np.float32)] * 2))
    shutil.copyfile(signal, outside / "outside.onnx")
    (root / "junk.onnx").write_text("not a model")
    (root / "link.onnx").symlink_to(outside / "outside.onnx")
    return {"root": root, "signal": signal, "image": image, "outside": outside / "outside.onnx"}


@pytest.fixture(scope="module")
def signal_server(folder):
    server = Server(
        folder["signal"],
        *("--max-body-mb", "0.25", "--max-windows", "8", "--body-timeout-s", "1"),
        *("--model-root", str(folder["root"]), "--max-wait-ms", "150"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def protected_server(folder):
    server = Server(folder["signal"], "--protect-predict", "--resample")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_server(folder):
    server = Server(
        folder["image"], "--max-windows", "4", "--max-body-mb", "1", "--body-timeout-s", "1", key=None
    )
    yield server
    server.stop()


def _noise(n: int, channels: int = 1) -> list:
    x = np.random.default_rng(n).standard_normal((channels, n)).round(3)
    return x[0].tolist() if channels == 1 else x.tolist()


def _png(width: int, height: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def _chunks(total: int):
    for _ in range(total // 65536):
        yield b"0" * 65536


def _check(response: requests.Response, status: int, field: str, needle: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert needle in error["message"], error
    assert response.headers["x-error-field"] == field


SIGNAL = "/v1/predict/signal"
IMAGE = "/v1/predict/image"
RELOAD = "/v1/admin/reload"
GOOD_PNG = _png(48, 40)

# (id, path, request keyword arguments, status, field, words of the message)
SIGNAL_CASES = [
    ("empty body", SIGNAL, {"data": b"", "headers": JSON}, 400, "body", "empty"),
    ("bad JSON", SIGNAL, {"data": b"{nope", "headers": JSON}, 400, "body", "not valid JSON"),
    ("JSON not an object", SIGNAL, {"json": [1, 2, 3]}, 422, "body", "'fs'"),
    ("missing fs", SIGNAL, {"json": {"data": [0.0] * 2000}}, 422, "body", "'fs'"),
    ("missing data", SIGNAL, {"json": {"fs": FS}}, 422, "body", "'data'"),
    ("fs zero", SIGNAL, {"json": {"fs": 0, "data": [0.0] * 2000}}, 422, "fs", "positive finite"),
    ("fs negative", SIGNAL, {"json": {"fs": -8000, "data": [0.0] * 2000}}, 422, "fs", "positive finite"),
    (
        "fs NaN",
        SIGNAL,
        {"data": b'{"fs": NaN, "data": [0.0, 1.0]}', "headers": JSON},
        422,
        "fs",
        "positive finite",
    ),
    ("fs text", SIGNAL, {"json": {"fs": "fast", "data": [0.0] * 2000}}, 422, "fs", "sample rate in Hz"),
    ("fs a list", SIGNAL, {"json": {"fs": [8000], "data": [0.0] * 2000}}, 422, "fs", "sample rate in Hz"),
    (
        "fs overflowing float",
        SIGNAL,
        {"data": b'{"fs": 1' + b"0" * 400 + b', "data": [0.0]}', "headers": JSON},
        422,
        "fs",
        "sample rate in Hz",
    ),
    (
        "float32 body without fs",
        SIGNAL,
        {"data": b"\x00" * 4096, "headers": OCTET},
        422,
        "fs",
        "?fs=",
    ),
    (
        "query fs text",
        SIGNAL,
        {"data": b"\x00" * 4096, "headers": OCTET, "params": {"fs": "abc"}},
        422,
        "fs",
        "sample rate in Hz",
    ),
    (
        "query fs NaN",
        SIGNAL,
        {"data": b"\x00" * 4096, "headers": OCTET, "params": {"fs": "nan"}},
        422,
        "fs",
        "positive finite",
    ),
    (
        "query fs negative",
        SIGNAL,
        {"data": b"\x00" * 4096, "headers": OCTET, "params": {"fs": "-1"}},
        422,
        "fs",
        "positive finite",
    ),
    (
        "channels zero",
        SIGNAL,
        {"data": b"\x00" * 4096, "headers": OCTET, "params": {"fs": FS, "channels": "0"}},
        422,
        "channels",
        "positive integer",
    ),
    (
        "channels text",
        SIGNAL,
        {"data": b"\x00" * 4096, "headers": OCTET, "params": {"fs": FS, "channels": "two"}},
        422,
        "channels",
        "positive integer",
    ),
    (
        "float32 body not a multiple of 4 bytes",
        SIGNAL,
        {"data": b"\x00\x00\x80", "headers": OCTET, "params": {"fs": FS}},
        422,
        "body",
        "multiple of 4",
    ),
    (
        "channels not splitting the values",
        SIGNAL,
        {"data": b"\x00" * 4 * 4097, "headers": OCTET, "params": {"fs": FS, "channels": "2"}},
        422,
        "channels",
        "equal channels",
    ),
    (
        "wrong content type",
        SIGNAL,
        {"data": b"1,2,3", "headers": {"content-type": "text/csv"}},
        415,
        "content-type",
        "application/json",
    ),
    ("no content type", SIGNAL, {"data": b"1,2,3"}, 415, "content-type", "application/octet-stream"),
    ("data text", SIGNAL, {"json": {"fs": FS, "data": "abc"}}, 422, "data", "list of numbers"),
    (
        "data ragged channels",
        SIGNAL,
        {"json": {"fs": FS, "data": [[1.0, 2.0], [3.0]]}},
        422,
        "data",
        "equal-length lists",
    ),
    (
        "data overflowing float",
        SIGNAL,
        {"data": b'{"fs": 8000, "data": [1' + b"0" * 400 + b"]}", "headers": JSON},
        422,
        "data",
        "list of numbers",
    ),
    ("data 3-D", SIGNAL, {"json": {"fs": FS, "data": [[[1.0, 2.0]]]}}, 422, "data", "channels x samples"),
    ("data empty", SIGNAL, {"json": {"fs": FS, "data": []}}, 422, "data", "channels x samples"),
    (
        "NaN in JSON data",
        SIGNAL,
        {"data": json.dumps({"fs": FS, "data": [1.0, float("nan")] * 600}).encode(), "headers": JSON},
        422,
        "data",
        "NaN or Inf",
    ),
    (
        "Inf in JSON data (1e400)",
        SIGNAL,
        {"data": b'{"fs": 8000, "data": [1e400, 0.0]}', "headers": JSON},
        422,
        "data",
        "NaN or Inf",
    ),
    (
        "Inf in float32 data",
        SIGNAL,
        {"data": np.array([1.0, np.inf] * 600, "<f4").tobytes(), "headers": OCTET, "params": {"fs": FS}},
        422,
        "data",
        "NaN or Inf",
    ),
    (
        "signal shorter than a window",
        SIGNAL,
        {"json": {"fs": FS, "data": [0.0] * 100}},
        422,
        "data",
        "at least one window of 1024 samples",
    ),
    (
        "wrong sample rate without --resample",
        SIGNAL,
        {"json": {"fs": 4000, "data": [0.0] * 2000}},
        422,
        "fs",
        "serve with --resample",
    ),
    (
        "more channels than the model's",
        SIGNAL,
        {"json": {"fs": FS, "data": _noise(2000, channels=3)}},
        422,
        "data",
        "send exactly those",
    ),
    (
        "more windows than --max-windows",
        SIGNAL,
        {"json": {"fs": FS, "data": _noise(9 * HOP + LENGTH)}},  # 10 windows, the limit is 8
        413,
        "data",
        "--max-windows",
    ),
    (
        "body above --max-body-mb (Content-Length)",
        SIGNAL,
        {"data": b"x" * (300 << 10), "headers": JSON},
        413,
        "body",
        "--max-body-mb",
    ),
    (
        "body above --max-body-mb (chunked, no Content-Length)",
        SIGNAL,
        {"data": _chunks(400 << 10), "headers": JSON},
        413,
        "body",
        "exceeds the limit",
    ),
    (
        "image sent to a signal model",
        IMAGE,
        {"data": GOOD_PNG, "headers": {"content-type": "image/png"}},
        404,
        "path",
        "/v1/predict/signal",
    ),
    ("reload without the API key", RELOAD, {"json": {"model": "x"}}, 401, "X-API-Key", "X-API-Key header"),
    (
        "reload with a wrong API key",
        RELOAD,
        {"json": {"model": "x"}, "headers": {"x-api-key": "nope"}},
        401,
        "X-API-Key",
        "wrong API key",
    ),
    (
        "reload body too large",
        RELOAD,
        {"data": b"{" + b" " * 70000 + b"}", "headers": {**JSON, **WITH_KEY}},
        413,
        "body",
        "small JSON object",
    ),
    (
        "reload bad JSON",
        RELOAD,
        {"data": b"{model", "headers": {**JSON, **WITH_KEY}},
        400,
        "body",
        '{"model": ',
    ),
    ("reload JSON not an object", RELOAD, {"json": ["m"], "headers": WITH_KEY}, 400, "body", '{"model": '),
    (
        "reload model not a string",
        RELOAD,
        {"json": {"model": 5}, "headers": WITH_KEY},
        422,
        "model",
        "must be a string",
    ),
]

# Cases whose request needs the model folder: (id, path relative to root or "outside", status, words).
RELOAD_TARGETS = [
    ("reload of a file outside --model-root", "outside", 403, "--model-root"),
    ("reload through a symlink out of --model-root", "link.onnx", 403, "--model-root"),
    ("reload of root/../outside", "../outside/outside.onnx", 403, "--model-root"),
    ("reload of a missing file in the root", "missing.onnx", 422, "not found"),
    ("reload of a file that is not a model", "junk.onnx", 422, "not a loadable ONNX model"),
    ("reload of the other kind (an image model)", "image.onnx", 422, "serves the other kind"),
]

PROTECTED_CASES = [
    (
        "predict without the API key",
        SIGNAL,
        {"json": {"fs": FS, "data": [0.0] * 2000}},
        401,
        "X-API-Key",
        "X-API-Key",
    ),
    (
        "predict with a wrong API key",
        SIGNAL,
        {"json": {"fs": FS, "data": [0.0] * 2000}, "headers": {"x-api-key": "wrong"}},
        401,
        "X-API-Key",
        "wrong API key",
    ),
    (
        "resampling by more than 16x up",
        SIGNAL,
        {"json": {"fs": 100, "data": [0.0] * 2000}, "headers": WITH_KEY},
        422,
        "fs",
        "factor of 16",
    ),
    (
        "resampling by more than 16x down",
        SIGNAL,
        {"json": {"fs": 200_000, "data": [0.0] * 2000}, "headers": WITH_KEY},
        422,
        "fs",
        "factor of 16",
    ),
]

PNG = {"content-type": "image/png"}
IMAGE_CASES = [
    ("signal sent to an image model", SIGNAL, {"json": {"fs": FS, "data": [0.0] * 2000}}, 404, "path", IMAGE),
    (
        "body not an image",
        IMAGE,
        {"data": b"not an image at all", "headers": PNG},
        422,
        "body",
        "not a readable image",
    ),
    (
        "truncated PNG",
        IMAGE,
        {"data": GOOD_PNG[: len(GOOD_PNG) // 2], "headers": PNG},
        422,
        "body",
        "not a readable image",
    ),
    (
        "multipart file not an image",
        IMAGE,
        {"files": [("file", ("a.png", b"nope", "image/png"))]},
        422,
        "file",
        "a.png: not a readable image",
    ),
    ("multipart without a file", IMAGE, {"files": [("note", (None, "hello"))]}, 422, "file", "holds no file"),
    (
        "multipart without a boundary",
        IMAGE,
        {"data": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "body",
        "multipart form",
    ),
    (
        "wrong content type",
        IMAGE,
        {"data": GOOD_PNG, "headers": {"content-type": "text/plain"}},
        415,
        "content-type",
        "image/png",
    ),
    ("no content type", IMAGE, {"data": GOOD_PNG}, 415, "content-type", "multipart/form-data"),
    ("empty image body", IMAGE, {"data": b"", "headers": PNG}, 400, "body", "empty"),
    (
        "12000 x 12000 PNG (above --max-pixels)",
        IMAGE,
        {"data": _png(12000, 12000, "1"), "headers": PNG},
        413,
        "body",
        "--max-pixels",
    ),
    (
        "12000 x 12000 PNG in a form",
        IMAGE,
        {"files": [("file", ("big.png", _png(12000, 12000, "1"), "image/png"))]},
        413,
        "file",
        "big.png: the image has 144,000,000 pixels; the limit is 40,000,000",
    ),
    (
        "images above --max-pixels together",
        IMAGE,
        {"files": [("file", (f"{i}.png", _png(6000, 4000, "1"), "image/png")) for i in range(2)]},
        413,
        "file",
        "in all",
    ),
    (
        "more images than --max-windows",
        IMAGE,
        {"files": [("file", (f"{i}.png", GOOD_PNG, "image/png")) for i in range(5)]},
        413,
        "file",
        "the limit is 4",
    ),
    (
        "body above --max-body-mb",
        IMAGE,
        {"data": b"\x89PNG" + b"0" * (1100 << 10), "headers": PNG},
        413,
        "body",
        "limit",
    ),
    (
        "reload without an API key configured",
        RELOAD,
        {"json": {"model": "x"}, "headers": WITH_KEY},
        403,
        "X-API-Key",
        "PIPELINE_API_KEY",
    ),
]


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "field", "needle"),
    [c[1:] for c in SIGNAL_CASES],
    ids=[c[0] for c in SIGNAL_CASES],
)
def test_signal_service_refuses(signal_server, path, kwargs, status, field, needle):
    _check(signal_server.post(path, **kwargs), status, field, needle)


@pytest.mark.parametrize(
    ("target", "status", "needle"), [c[1:] for c in RELOAD_TARGETS], ids=[c[0] for c in RELOAD_TARGETS]
)
def test_signal_service_refuses_reload_of(signal_server, folder, target, status, needle):
    path = folder["outside"] if target == "outside" else folder["root"] / target
    response = signal_server.post(RELOAD, json={"model": str(path)}, headers=WITH_KEY)
    _check(response, status, "model", needle)
    assert (
        signal_server.post(SIGNAL, json={"fs": FS, "data": _noise(2000)}).status_code == 200
    )  # still serving


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "field", "needle"),
    [c[1:] for c in PROTECTED_CASES],
    ids=[c[0] for c in PROTECTED_CASES],
)
def test_protected_service_refuses(protected_server, path, kwargs, status, field, needle):
    _check(protected_server.post(path, **kwargs), status, field, needle)


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "field", "needle"),
    [c[1:] for c in IMAGE_CASES],
    ids=[c[0] for c in IMAGE_CASES],
)
def test_image_service_refuses(image_server, path, kwargs, status, field, needle):
    _check(image_server.post(path, **kwargs), status, field, needle)


@pytest.mark.parametrize(
    "as_json", [False, True], ids=["amplitude 3e38 as float32 bytes", "amplitude 3e38 as JSON"]
)
def test_a_signal_at_the_float32_limit_fails_alone_in_a_shared_batch(signal_server, as_json):
    huge = np.full(4096, 3e38, "f4")
    good = np.random.default_rng(1).standard_normal(4096).astype("f4")

    def send(x: np.ndarray) -> requests.Response:
        if as_json:
            return signal_server.post(SIGNAL, json={"fs": FS, "data": x.astype(float).tolist()})
        return signal_server.post(SIGNAL, data=x.tobytes(), headers=OCTET, params={"fs": FS})

    shared = False
    for _ in range(3):  # until both landed in one model run (--max-wait-ms 150 makes it likely)
        runs = signal_server.metric("pipeline_batch_requests_count")
        served = signal_server.metric("pipeline_batch_requests_sum")
        with ThreadPoolExecutor(2) as pool:
            bad, ok = pool.map(send, [huge, good])
        _check(bad, 422, "data", "non-finite")
        assert ok.status_code == 200, ok.text
        assert ok.json()["windows"] == 7
        runs_now = signal_server.metric("pipeline_batch_requests_count") - runs
        shared = runs_now == 1 and signal_server.metric("pipeline_batch_requests_sum") - served == 2
        if shared:
            break
    assert shared, "the two requests never shared a model run"


def _raw(port: int, request: bytes, wait: float) -> tuple[int, dict, float]:
    """Send `request` (headers promising more body than it holds) and read the answer."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), time.perf_counter() - start


SLOW = [
    ("signal", SIGNAL, "application/json", {}),
    ("signal", RELOAD, "application/json", WITH_KEY),
    ("image", IMAGE, "image/png", {}),
    ("image", IMAGE, "multipart/form-data; boundary=xyz", {}),
]


@pytest.mark.parametrize(
    ("server", "path", "content_type", "headers"),
    SLOW,
    ids=["signal JSON body", "reload body", "image body", "multipart form"],
)
def test_a_body_shorter_than_its_content_length_gets_408(request, server, path, content_type, headers):
    service = request.getfixturevalue(f"{server}_server")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra}"
        "Content-Length: 1000\r\n\r\n"
    )
    status, body, waited = _raw(service.port, head.encode() + b"--xyz\r\n12", wait=10)
    assert status == 408 and body["error"]["field"] == "body", body
    assert (
        "--body-timeout-s" in body["error"]["message"] and "of the 1000 declared" in body["error"]["message"]
    )
    assert 0.9 < waited < 1 + 2.0, waited  # --body-timeout-s 1, and a margin


CLI_CASES = [
    (
        "listening beyond loopback without a key",
        ["--host", "0.0.0.0"],
        ["--host 0.0.0.0", "PIPELINE_API_KEY", "--allow-unauthenticated"],
    ),
    (
        "listening on :: without a key",
        ["--host", "::"],
        ["--host ::", "PIPELINE_API_KEY", "--allow-unauthenticated"],
    ),
    ("--max-windows 0", ["--max-windows", "0"], ["--max-windows must be at least 1"]),
    ("--max-pixels 0", ["--max-pixels", "0"], ["--max-pixels must be at least 1"]),
    ("--body-timeout-s 0", ["--body-timeout-s", "0"], ["--body-timeout-s must be at least"]),
    ("--model-root not a folder", ["--model-root", "/nonexistent/models"], ["--model-root", "not a folder"]),
    ("--protect-predict without a key", ["--protect-predict"], ["PIPELINE_API_KEY"]),
]


@pytest.mark.parametrize(("flags", "needles"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_serve_refuses_at_start_with_exit_code_2(folder, flags, needles):
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--model", str(folder["signal"]), "--port", "1", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert all(n in proc.stderr for n in needles) and "Traceback" not in proc.stderr, proc.stderr
