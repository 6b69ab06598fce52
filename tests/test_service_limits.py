"""The service's limits as a real uvicorn process on 127.0.0.1: large images decode off the event
loop, a large signal request is split across model runs (same answer, in order, no run above
--max-batch, small requests not starved), slow bodies time out while /healthz stays fast, reload
targets are restricted, and `pipeline serve` refuses to listen beyond loopback unprotected."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from deploy.inferencer import OnnxInferencer
from deploy.limits import is_loopback, listen_policy, reload_allowed
from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx
from pipeline.ingest.windows import cut_windows
from signal2image import CwtTransform
from signal2image.errors import UserError
from tests.test_service import KEY, Server, models  # noqa: F401 - `models` is a fixture

FS, LENGTH = 8000, 1024


class Tone(torch.nn.Module):
    """A network whose class is the tone's band: class 0 ("low", a 300 Hz tone) when the upper half
    of the CWT image is brighter, class 1 ("high", 2.5 kHz) when the lower half is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[2] // 2
        d = x[:, :, :half].mean((1, 2, 3)) - x[:, :, half:].mean((1, 2, 3))
        return torch.stack([d, -d, torch.zeros_like(d)], 1) * 10


def _tones(pattern: np.ndarray) -> np.ndarray:
    t = np.arange(LENGTH) / FS
    return np.concatenate([np.sin(2 * np.pi * (300 if p else 2500) * t) for p in pattern]).astype("f4")


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tone") / "tone.onnx"
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3000, n_scales=32)
    meta = ModelMetadata.for_transform(
        ["low", "high", "none"], cwt, window=(LENGTH, LENGTH), model=ModelInfo(name="tone")
    )
    windows = cut_windows(_tones(np.array([0, 1, 0, 1]))[None], LENGTH, LENGTH)
    export_onnx(Tone().eval(), cwt(windows), path, metadata=meta)
    return path


@pytest.fixture(scope="module")
def split_server(tone_model):
    server = Server(tone_model, "--max-batch", "16", "--max-wait-ms", "2")
    yield server
    server.stop()


def _octet(server: Server, signal: np.ndarray) -> requests.Response:
    return server.post(
        f"/v1/predict/signal?fs={FS}",
        data=signal.astype("<f4").tobytes(),
        headers={"content-type": "application/octet-stream"},
    )


def _bucket(server: Server, le: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith(f'pipeline_batch_size_bucket{{le="{le}"}}'))
    return float(line.split()[-1])


def test_a_large_request_is_split_into_runs_of_max_batch_and_answers_in_order(split_server, tone_model):
    pattern = np.random.default_rng(0).integers(0, 2, 100)
    signal = _tones(pattern)
    runs_before = split_server.metric("pipeline_batch_size_count")
    whole = _octet(split_server, signal)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["windows"] == 100
    expected = OnnxInferencer(tone_model).predict_windows(cut_windows(signal[None], LENGTH, LENGTH))
    assert body["window_labels"] == [["low", "high", "none"][i] for i in expected.argmax(1)]
    assert body["window_labels"] == ["low" if p else "high" for p in pattern]  # in the order of the signal
    # The same signal in pieces of 10 windows: the same window labels and the same mean probabilities.
    pieces = [_octet(split_server, signal[i * LENGTH : (i + 10) * LENGTH]).json() for i in range(0, 100, 10)]
    assert [label for piece in pieces for label in piece["window_labels"]] == body["window_labels"]
    for c in ("low", "high", "none"):
        assert np.isclose(
            np.mean([p["probabilities"][c] for p in pieces]), body["probabilities"][c], atol=1e-6
        )
    assert split_server.metric("pipeline_batch_size_count") - runs_before >= 7 + 10  # 100 windows: >= 7 runs
    assert _bucket(split_server, "16.0") == split_server.metric("pipeline_batch_size_count")  # none above 16


def test_a_small_request_is_not_held_behind_a_large_one(split_server):
    big = _tones(np.random.default_rng(1).integers(0, 2, 1024))  # --max-windows' default: 64 runs of 16
    small = _tones(np.array([1]))
    assert _octet(split_server, small).status_code == 200  # warm
    runs = split_server.metric("pipeline_batch_size_count")
    with ThreadPoolExecutor(1) as pool:
        large = pool.submit(_octet, split_server, big)
        deadline = time.time() + 30
        while split_server.metric("pipeline_batch_size_count") == runs and time.time() < deadline:
            time.sleep(0.005)  # until the large request's first model run has started
        answer = _octet(split_server, small)
        assert answer.status_code == 200
        assert not large.done(), "the small request waited for the whole large one"
        assert large.result().status_code == 200


def test_decoding_a_large_image_does_not_hold_the_event_loop(models):  # noqa: F811
    server = Server(models["image"], key=None)
    try:
        picture = np.zeros((5000, 5000, 3), np.uint8)
        picture[::7, :, 0] = 255  # compressible, yet every pixel is decoded and converted
        png = io.BytesIO()
        Image.fromarray(picture).save(png, format="PNG", compress_level=1)
        answer: dict[str, object] = {}

        def send() -> None:
            start = time.perf_counter()
            response = server.post(
                "/v1/predict/image", data=png.getvalue(), headers={"content-type": "image/png"}
            )
            answer["status"], answer["seconds"] = response.status_code, time.perf_counter() - start

        sender = threading.Thread(target=send)
        sender.start()
        slowest = 0.0
        while sender.is_alive():
            start = time.perf_counter()
            assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
            slowest = max(slowest, time.perf_counter() - start)
            time.sleep(0.02)
        sender.join()
        assert answer["status"] == 200
        seconds = float(answer["seconds"])  # type: ignore[arg-type]
        assert slowest < 0.25 and slowest < seconds / 2, (slowest, answer)
    finally:
        server.stop()


def _slow_request(port: int, path: str, content_type: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 1000\r\n\r\n".encode()
        + b"0123456789"
    )
    return sock


def _read_reply(sock: socket.socket) -> str:
    """Read one whole HTTP reply: the headers and as many body bytes as Content-Length says.

    One recv() may return the headers alone (the body comes in a second TCP segment).
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.decode(errors="replace").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_a_body_shorter_than_its_content_length_gets_408_and_healthz_stays_fast(models):  # noqa: F811
    server = Server(models["signal_a"], "--body-timeout-s", "1.5")
    try:
        start = time.perf_counter()
        sock = _slow_request(server.port, "/v1/predict/signal", "application/json")
        slowest = 0.0
        for _ in range(5):
            t = time.perf_counter()
            assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
            slowest = max(slowest, time.perf_counter() - t)
            time.sleep(0.1)
        reply = _read_reply(sock)
        waited = time.perf_counter() - start
        sock.close()
        assert reply.startswith("HTTP/1.1 408"), reply
        assert '"field":"body"' in reply and "--body-timeout-s" in reply
        assert 1.4 < waited < 1.5 + 3.0 and slowest < 1.0, (waited, slowest)
    finally:
        server.stop()


def test_reload_without_model_root_takes_only_the_start_source(models):  # noqa: F811
    server = Server(models["signal_a"])
    try:
        headers = {"x-api-key": KEY}
        other = server.post("/v1/admin/reload", json={"model": str(models["signal_b"])}, headers=headers)
        assert other.status_code == 403 and other.json()["error"]["field"] == "model"
        assert "--model-root" in other.json()["error"]["message"]
        same = server.post("/v1/admin/reload", json={"model": str(models["signal_a"])}, headers=headers)
        assert same.status_code == 200, same.text
        assert (
            server.post("/v1/admin/reload", headers=headers).status_code == 200
        )  # empty: the current source
    finally:
        server.stop()


def test_reload_allowed_rules(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    (root / "a.onnx").write_bytes(b"")
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"")
    (root / "link.onnx").symlink_to(outside)
    rule = {"started_with": "/srv/start.onnx", "model_root": root}
    assert reload_allowed("models:/gearbox-fault@champion", **rule)
    assert reload_allowed("/srv/start.onnx", **rule)  # the exact start source
    assert reload_allowed(str(root / "a.onnx"), **rule)
    assert reload_allowed(str(root / "sub" / ".." / "a.onnx"), **rule)
    assert not reload_allowed(str(root / ".." / "secret.onnx"), **rule)
    assert not reload_allowed(str(root / "link.onnx"), **rule)  # a symlink out of the root
    assert not reload_allowed(str(outside), **rule)
    assert not reload_allowed(str(root / "a.onnx"), started_with="/srv/start.onnx", model_root=None)


def test_listening_beyond_loopback_needs_a_key_or_an_explicit_flag():
    for host in ("127.0.0.1", "::1", "localhost", "[::1]"):
        assert is_loopback(host)
        assert listen_policy(host, api_key=None, allow_unauthenticated=False, protect_predict=False) is False
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org", ""):
        assert not is_loopback(host)
        with pytest.raises(UserError, match="--host"):
            listen_policy(host, api_key=None, allow_unauthenticated=False, protect_predict=False)
        assert listen_policy(host, api_key="k", allow_unauthenticated=False, protect_predict=False) is True
        assert listen_policy(host, api_key=None, allow_unauthenticated=True, protect_predict=False) is False
