"""The drift watch: the MMD test, the reference the export writes into the model, condition-aware
judging, and `pipeline serve` as a real uvicorn process watching drift (and a model without a
reference still serving)."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import requests
import torch

from deploy.drift import CONDITIONS, DriftMonitor, band_layout, condition_vector, mmd_test, reference_pick
from deploy.inferencer import OnnxInferencer
from deploy.metadata import DriftReference, ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx, export_with_reference
from deploy.variants import make_int8, refresh_reference, write_triton_repository
from models import build_model, head_path
from signal2image import CwtTransform
from tests.test_service import Server

FS, LENGTH = 8000, 1024
RPM = (900.0, 2100.0)


def _tone(rpm: float, seed: int, snr_db: float = 10.0, n: int = LENGTH) -> np.ndarray:
    """A 'mesh' tone at 23 x the shaft rate with two harmonics, in white noise at `snr_db`."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    f = 23 * rpm / 60
    x = sum(
        a * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6.3)) for k, a in ((1, 1.0), (2, 0.4), (3, 0.2))
    )
    noise = rng.standard_normal(n) * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def _training_set(n: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rpm = rng.uniform(*RPM, n)
    load = rng.uniform(0.2, 1.0, n)
    windows = np.stack([_tone(r, seed * 10_000 + i) for i, r in enumerate(rpm)])
    return windows, np.stack([rpm, load], axis=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A pretrained EfficientNet-Lite0 on 32 px CWT images, exported with and without a reference."""
    folder = tmp_path_factory.mktemp("drift")
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=3, pretrained=True).eval()
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3900, n_scales=32)
    windows, conditions = _training_set()
    inputs = cwt(windows)
    meta = ModelMetadata.for_transform(
        ["a", "b", "c"], cwt, window=(LENGTH, LENGTH), model=ModelInfo(name="m", version="7")
    )
    path = folder / "with_reference.onnx"
    parity, reference = export_with_reference(
        model,
        inputs[:16],
        path,
        metadata=meta,
        head=head_path("efficientnet_lite0"),
        reference_inputs=inputs,
        transform=cwt,
        window_length=LENGTH,
        conditions=conditions,
        condition_range={"rpm": RPM, "load": (0.2, 1.0)},
        recording=np.arange(len(windows)) // 4,  # four windows to a "recording"
    )
    plain = folder / "without_reference.onnx"
    export_onnx(model, inputs[:16], plain, metadata=meta)
    return {
        "model": model,
        "inputs": inputs,
        "windows": windows,
        "path": path,
        "plain": plain,
        "parity": parity,
        "reference": reference,
        "transform": cwt,
        "folder": folder,
    }


# ----------------------------------------------------------------------------- the test itself


def test_mmd_same_distribution_is_not_significant_and_a_shift_is():
    rng = np.random.default_rng(0)
    same = [
        mmd_test(
            rng.standard_normal((120, 8)), rng.standard_normal((80, 8)), permutations=200, seed=s
        ).p_value
        for s in range(20)
    ]
    assert all(0 < p <= 1 for p in same)
    assert np.median(same) > 0.2 and sum(p < 0.01 for p in same) <= 1
    shifted = mmd_test(rng.standard_normal((120, 8)), rng.standard_normal((80, 8)) + 0.7, permutations=200)
    assert shifted.p_value == pytest.approx(1 / 201) and shifted.score > 0
    wider = mmd_test(rng.standard_normal((120, 8)), 2 * rng.standard_normal((80, 8)), permutations=200)
    assert wider.p_value < 0.01  # a change of spread, not only of the mean
    assert mmd_test(rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), permutations=0).p_value == 1.0
    with pytest.raises(ValueError, match="two rows"):
        mmd_test(np.zeros((1, 3)), np.zeros((4, 3)))


def test_the_permutation_p_value_is_uniform_under_the_null():
    rng = np.random.default_rng(1)
    ps = np.array(
        [
            mmd_test(
                rng.standard_normal((40, 3)), rng.standard_normal((40, 3)), permutations=99, seed=s
            ).p_value
            for s in range(60)
        ]
    )
    assert ((ps > 0) & (ps <= 1)).all()
    assert 0.02 <= np.mean(ps < 0.2) <= 0.4  # about 20 % below 0.2


# ----------------------------------------------------------------------------- the export


def test_export_writes_the_features_output_and_the_reference(exported):
    parity, reference, path = exported["parity"], exported["reference"], exported["path"]
    assert parity.same_predictions and parity.max_abs_diff <= parity.allowed(1e-4)  # logits still faithful
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["logits", "features"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert len(props["drift_reference"]) < 200_000
    meta = ModelMetadata.from_onnx(path)
    ref = meta.drift
    assert ref is not None and ref == reference and ref.version == 2
    # each sample's recording, renumbered 0..R-1 in the order of the picked inputs
    pick = reference_pick(320, 256, 0)
    assert (
        ref.groups is not None
        and ref.groups.tolist() == np.unique(pick // 4, return_inverse=True)[1].tolist()
    )
    assert ref.features.shape == (256, 32) and ref.raw_dim == 1280 and ref.n_summarised == 320
    assert 0 < ref.explained_variance <= 1
    assert ref.bands.shape == (256, 8) and ref.band_unit == "Hz"
    assert ref.band_edges[0] == pytest.approx(100, rel=0.05) and ref.band_edges[-1] == pytest.approx(3900)
    assert list(ref.band_edges) == sorted(ref.band_edges)
    assert (
        ref.conditions is not None and ref.conditions.shape == (256, 2) and ref.condition_names == CONDITIONS
    )
    assert ref.condition_range["rpm"] == RPM
    # The service's features of the same inputs are the stored ones: the projection is in the graph.
    inferencer = OnnxInferencer(path)
    out = inferencer.run_inputs(exported["inputs"][:8].numpy())
    with torch.no_grad():
        logits = exported["model"](exported["inputs"][:8])
    assert np.allclose(out.probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    assert out.features is not None and out.features.shape == (8, 32)
    stored = {tuple(np.round(row, 4)) for row in ref.features}
    assert (
        sum(tuple(np.round(row, 4)) in stored for row in out.features) >= 4
    )  # the sample's rows are among them
    # An older export: one output, no reference, and a note that says so.
    old = OnnxInferencer(exported["plain"])
    assert old.features_index is None and old.metadata.drift is None
    assert "without a drift reference" in old.metadata.drift_note
    assert ModelMetadata.from_json(meta.to_json()) == meta


def test_variants_and_triton_keep_working_with_two_outputs(exported, tmp_path):
    path, inputs = exported["path"], exported["inputs"].numpy()
    int8 = make_int8(path, tmp_path / "m.int8.onnx", inputs[:32])
    assert refresh_reference(int8, inputs)
    variant = OnnxInferencer(int8)
    assert variant.metadata.variant.kind == "int8" and variant.features_index == 1
    fp32 = exported["reference"].features
    assert not np.array_equal(variant.metadata.drift.features, fp32)  # its own features
    assert np.corrcoef(variant.metadata.drift.features.ravel(), fp32.ravel())[0, 1] > 0.9
    assert not refresh_reference(int8, inputs[:10])  # not the inputs the reference summarised
    folder = write_triton_repository(path, tmp_path / "repo", name="m")
    config = (folder / "config.pbtxt").read_text()
    assert re.search(r'name: "logits"\s+data_type: TYPE_FP32\s+dims: \[ 3 \]', config)
    assert re.search(r'name: "features"\s+data_type: TYPE_FP32\s+dims: \[ 32 \]', config)
    assert "drift_reference" in json.loads((folder / "metadata.json").read_text())


def test_band_edges_follow_the_transform():
    cwt = CwtTransform(fs=FS, image_size=32, f_min=100, f_max=3200, n_scales=64)
    rows, edges, unit = band_layout(cwt, LENGTH, 4)
    assert rows == (0, 8, 16, 24, 32) and unit == "Hz"
    assert edges[0] == pytest.approx(100, rel=0.03) and edges[-1] == pytest.approx(3200, rel=0.03)
    assert edges[2] == pytest.approx(np.sqrt(100 * 3200), rel=0.05)  # log-spaced: the middle is geometric


# ----------------------------------------------------------------------------- condition-aware judging


def _synthetic_reference(n: int = 256, seed: int = 0) -> DriftReference:
    """Features that depend on the speed: a request at some rpm is only like the reference samples
    near that rpm."""
    rng = np.random.default_rng(seed)
    rpm = rng.uniform(*RPM, n)
    load = rng.uniform(0.2, 1.0, n)
    features = np.stack([rpm / 300, np.sin(rpm / 200), *rng.standard_normal((4, n)) * 0.1], axis=1)
    bands = rng.normal(0.5, 0.05, (n, 4))
    return DriftReference(
        features=features.astype(np.float32),
        bands=bands.astype(np.float32),
        band_rows=(0, 8, 16, 24, 32),
        band_edges=(100.0, 200.0, 400.0, 800.0, 1600.0),
        band_unit="Hz",
        band_mean=tuple(bands.mean(0)),
        band_std=tuple(bands.std(0)),
        conditions=np.stack([rpm, load], axis=1).astype(np.float32),
        condition_names=CONDITIONS,
        condition_range={"rpm": RPM, "load": (0.2, 1.0)},
    )


def _stream(monitor: DriftMonitor, rpm: np.ndarray, *, declare: bool, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    n = len(rpm)
    features = np.stack([rpm / 300, np.sin(rpm / 200), *rng.standard_normal((4, n)) * 0.1], axis=1)
    bands = np.repeat(rng.normal(0.5, 0.05, (n, 1, 4, 1)), 8, axis=2)  # each band's rows alike
    inputs = np.repeat(bands, 32, axis=3)
    conditions = [condition_vector({"rpm": r} if declare else None) for r in rpm]
    monitor.observe(features.astype(np.float32), inputs.astype(np.float32), conditions)
    monitor.process()
    return monitor.status()


def test_a_request_at_a_trained_rpm_is_compared_with_reference_samples_of_that_rpm():
    reference = _synthetic_reference()
    assert DriftMonitor(reference).neighbours == 64  # a quarter of the "recordings" (samples: no groups)
    monitor = DriftMonitor(reference, window=60, alpha=0.01, permutations=200, neighbours=16)
    at_1500 = np.array([[1500.0, np.nan]] * 3)
    assert monitor.matched_dims(at_1500) == [0]  # rpm: declared by every request
    chosen = monitor.neighbours_of(at_1500, [0])
    assert len(chosen) == 16
    near = np.abs(reference.conditions[chosen, 0] - 1500)
    assert near.max() < 0.1 * (RPM[1] - RPM[0])  # only samples of about that speed
    spread = monitor.neighbours_of(np.array([[1000.0, np.nan], [2000.0, np.nan]]), [0])
    assert len(spread) >= 16 and {
        np.abs(reference.conditions[spread, 0] - 1000).min() < 50,
        np.abs(reference.conditions[spread, 0] - 2000).min() < 50,
    } == {True}
    assert monitor.matched_dims(np.array([[1500.0, np.nan], [np.nan, np.nan]])) == []  # one declares none
    # a declared load beyond the trained range: matched on the rpm alone
    assert monitor.matched_dims(np.array([[1500.0, 0.5], [1500.0, 0.05]])) == [0]

    # A planned speed change to 1500 rpm (inside the trained range), declared: no alarm.
    planned = np.random.default_rng(2).uniform(1480, 1520, 60)
    status = _stream(monitor, planned, declare=True)
    assert status["evaluations"] == 1 and status["matched_on"] == ["rpm"]
    assert not status["alarm"] and status["p_value"] > 0.01
    assert status["conditions"]["outside_trained_range"] == {}
    # The same stream without the rpm is judged against the whole training mix: it is not like it.
    blind = DriftMonitor(reference, window=60, alpha=0.01, permutations=200)
    status = _stream(blind, planned, declare=False)
    assert status["alarm"] and status["since"] is not None and status["matched_on"] == []


def _recordings(count: int, per: int, rpm: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of `count` recordings of `per` windows each: a speed effect, a recording's own
    offset (its load, gain, resonance: large) and each window's noise (small)."""
    rng = np.random.default_rng(seed)
    offset = np.repeat(rng.standard_normal((count, 4)) * 0.3, per, axis=0)
    speed = np.repeat(rpm, per)
    noise = rng.standard_normal((count * per, 4)) * 0.05
    features = np.concatenate([np.stack([speed / 300, np.sin(speed / 200)], axis=1), offset + noise], axis=1)
    return features.astype(np.float32), speed


def test_a_planned_speed_is_judged_against_whole_training_recordings():
    """Windows of one training recording are alike; the requests of a planned speed change come from
    many new recordings. Judged against the windows of the few training recordings of that speed as
    if they were independent, the change alarms; one sample per training recording does not."""
    rng = np.random.default_rng(7)
    features, speed = _recordings(64, 4, rng.uniform(*RPM, 64), seed=8)
    bands = np.full((len(features), 4), 0.5, np.float32)

    def reference(groups: np.ndarray | None) -> DriftReference:
        return DriftReference(
            features=features,
            bands=bands,
            band_rows=(0, 8, 16, 24, 32),
            band_edges=(100.0, 200.0, 400.0, 800.0, 1600.0),
            band_unit="Hz",
            band_mean=(0.5,) * 4,
            band_std=(0.05,) * 4,
            conditions=np.stack([speed, np.full_like(speed, np.nan)], axis=1).astype(np.float32),
            condition_names=CONDITIONS,
            condition_range={"rpm": RPM},
            groups=groups,
        )

    stream, stream_rpm = _recordings(80, 1, rng.uniform(1490, 1510, 80), seed=9)  # 80 new recordings
    inputs = np.full((80, 1, 32, 32), 0.5, np.float32)
    conditions = [condition_vector({"rpm": r}) for r in stream_rpm]
    alarms = {}
    for name, groups in (("recordings", np.arange(256) // 4), ("windows", None)):
        monitor = DriftMonitor(reference(groups), window=80, alpha=0.01, permutations=200, neighbours=16)
        monitor.observe(stream, inputs, conditions)
        assert monitor.process()
        status = monitor.status()
        assert status["matched_on"] == ["rpm"]
        alarms[name] = (status["alarm"], status["p_value_matched"], status["compared_with"])
    assert alarms["recordings"][0] is False and alarms["recordings"][2] >= 16, alarms  # 16 recordings
    assert alarms["windows"][0] is True, alarms  # 16 windows of about 4 recordings: "not like them"


def test_a_speed_outside_the_trained_range_is_reported_and_alarms():
    monitor = DriftMonitor(_synthetic_reference(), window=60, alpha=0.01, permutations=200)
    status = _stream(monitor, np.random.default_rng(3).uniform(2600, 2800, 60), declare=True)
    outside = status["conditions"]["outside_trained_range"]
    assert outside["rpm"]["requests"] == 60 and outside["rpm"]["trained"] == list(RPM)
    assert status["matched_on"] == []  # beyond the trained range: judged against the whole reference
    assert status["alarm"] and status["p_value"] < 0.01


def test_alarm_clears_and_since_marks_its_start():
    monitor = DriftMonitor(_synthetic_reference(), window=40, alpha=0.01, permutations=200, step=40)
    rng = np.random.default_rng(4)
    status = _stream(monitor, rng.uniform(2600, 2800, 40), declare=False)
    assert status["alarm"] and status["alarmed_evaluations"] == 1
    since = status["since"]
    status = _stream(monitor, rng.uniform(2600, 2800, 40), declare=False, seed=5)
    assert status["alarm"] and status["since"] == since and status["evaluations"] == 2
    status = _stream(monitor, rng.uniform(*RPM, 40), declare=False, seed=6)
    assert not status["alarm"] and status["since"] is None


# ----------------------------------------------------------------------------- the service


def _post(server: Server, signal: np.ndarray, **extra) -> requests.Response:
    response = server.post("/v1/predict/signal", json={"fs": FS, "data": signal.tolist(), **extra})
    assert response.status_code == 200, response.text
    return response


def _drift(server: Server) -> dict:
    return requests.get(server.url + "/v1/drift", timeout=10).json()


def _wait_for_evaluations(server: Server, count: int) -> dict:
    import time

    deadline = time.time() + 30
    while time.time() < deadline:
        status = _drift(server)
        if status["evaluations"] >= count:
            return status
        time.sleep(0.1)
    raise AssertionError(f"no drift test ran: {status}")


def test_service_reports_no_drift_in_distribution_and_an_alarm_for_a_shift(exported):
    server = Server(exported["path"], "--drift-window", "40", "--max-wait-ms", "1")
    try:
        status = _drift(server)
        assert status["available"] and status["window_size"] == 40 and status["n_in_window"] == 0
        assert status["score"] is None and not status["alarm"]
        rng = np.random.default_rng(11)
        for i in range(40):  # like the training data: speeds drawn from the trained range
            _post(server, _tone(rng.uniform(*RPM), 50_000 + i))
        status = _wait_for_evaluations(server, 1)
        assert not status["alarm"] and status["p_value"] >= 0.01, status
        assert status["n_in_window"] == 40 and status["since"] is None
        assert server.metric("drift_alarm") == 0 and server.metric("drift_p_value") == status["p_value"]
        assert 'drift_score{model_version="7"}' in requests.get(server.url + "/metrics", timeout=10).text
        for i in range(40):  # 10 dB more noise than any training window
            _post(server, _tone(rng.uniform(*RPM), 60_000 + i, snr_db=0.0))
        status = _wait_for_evaluations(server, 5)
        assert status["alarm"] and status["p_value"] < 0.01 and status["since"] is not None, status
        assert server.metric("drift_alarm") == 1
        moved = status["bands"]
        assert len(moved) == 3 and all(b["unit"] == "Hz" and b["range"][0] < b["range"][1] for b in moved)
        assert abs(moved[0]["change_std"]) >= abs(moved[-1]["change_std"])
        # a request may declare its condition; a bad one is refused naming the field
        _post(server, _tone(1200, 1), rpm=1200, load=0.5)
        bad = server.post("/v1/predict/signal", json={"fs": FS, "data": [0.0] * LENGTH, "rpm": "fast"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "rpm"
        described = requests.get(server.url + "/v1/model", timeout=10).json()["drift_reference"]
        assert described["samples"] == 256 and "features" not in described
    finally:
        server.stop()


def test_declared_speeds_are_judged_against_reference_samples_of_that_speed(exported):
    server = Server(exported["path"], "--drift-window", "20", "--max-wait-ms", "1")
    try:
        for i in range(20):
            _post(server, _tone(1500 + 10 * (i % 3), 70_000 + i), rpm=1500 + 10 * (i % 3))
        status = _wait_for_evaluations(server, 1)
        assert status["matched_on"] == ["rpm"] and status["compared_with"] < 256
        assert status["conditions"]["requests_with_condition"] == 20
    finally:
        server.stop()


def test_a_model_without_a_reference_still_serves_and_says_drift_is_unavailable(exported):
    server = Server(exported["plain"])
    try:
        _post(server, _tone(1200, 3))
        status = _drift(server)
        assert status["available"] is False and "without a drift reference" in status["reason"]
        assert "drift_score{" not in requests.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()
    off = Server(exported["path"], "--no-drift")
    try:
        _post(off, _tone(1200, 3))
        assert _drift(off) == {
            "available": False,
            "reason": "the drift watch is off (pipeline serve --no-drift)",
        }
    finally:
        off.stop()
