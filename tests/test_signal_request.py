"""One preparation of a signal request (deploy/signal_request.py): channels, rate, length,
non-finite values; and `pipeline predict` refusing what it cannot classify (exit 2, valid JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deploy.inferencer import OnnxInferencer
from deploy.metadata import ModelMetadata
from deploy.onnx_export import export_onnx
from deploy.signal_request import RequestError, prepare_signal, select_channels
from models import build_model
from pipeline.cli import main
from signal2image import StftTransform

FS, LENGTH = 8000, 512


def _meta(channels=(0,), file_channels=None, norm="none") -> ModelMetadata:
    transform = StftTransform(fs=FS, image_size=32, nperseg=64, hop=16, signal_norm=norm)
    return ModelMetadata.for_transform(
        ["a", "b"], transform, window=(LENGTH, LENGTH), channels=channels, file_channels=file_channels
    )


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    transform = StftTransform(fs=FS, image_size=32, nperseg=64, hop=16)
    inputs = transform(np.random.default_rng(0).standard_normal((4, LENGTH)).astype(np.float32))
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    net = build_model("efficientnet_lite0", num_classes=2, pretrained=False).eval()
    export_onnx(net, inputs, path, metadata=_meta(file_channels=1))
    return path


def test_channels_by_name_by_count_and_by_index_only_for_files_like_the_training_ones():
    sig = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(select_channels(sig, ["FE"], ["DE", "FE", "BA"]), sig[[1]])
    assert np.array_equal(select_channels(sig[:1], [2]), sig[:1])  # the sender picked the one channel
    assert np.array_equal(select_channels(sig, [2], file_channels=3), sig[[2]])
    refused = r"has 3 channel\(s\); the model reads 1 channel\(s\) \[2\]"
    with pytest.raises(RequestError, match=refused) as err:
        select_channels(sig, [2], file_channels=1)
    assert err.value.field == "data"
    with pytest.raises(RequestError, match="the file's channels"):
        select_channels(sig, ["XX"], ["DE", "FE", "BA"])


def test_a_stack_of_sixteen_rows_is_not_read_as_its_first_channel():
    with pytest.raises(RequestError, match=r"16 channel\(s\).*separate requests"):
        prepare_signal(_meta(file_channels=1), np.zeros((16, 4096), np.float32), FS)


def test_rate_and_length_are_checked_with_the_field_named():
    with pytest.raises(RequestError, match="expects 8000 Hz") as err:
        prepare_signal(_meta(), np.zeros(4096, np.float32), 12800)
    assert err.value.field == "fs"
    with pytest.raises(RequestError, match="at least one window of 512") as err:
        prepare_signal(_meta(), np.zeros(100, np.float32), FS)
    assert err.value.field == "data"
    assert prepare_signal(_meta(), np.zeros(4096, np.float32), 16000, resample_rate=True).shape == (4, 1, 512)


def test_a_recording_that_cannot_be_z_scored_is_refused():
    with pytest.raises(RequestError, match="z-scoring the signal gave non-finite values"):
        prepare_signal(_meta(norm="recording"), np.full(4096, 3e38, np.float32), FS)


def test_non_finite_windows_get_no_verdict_and_a_batch_fails_only_its_bad_rows(model_path):
    inferencer = OnnxInferencer(model_path)
    good = np.random.default_rng(1).standard_normal((2, LENGTH)).astype(np.float32)
    huge = np.full((1, LENGTH), 3e38, np.float32)
    probs, problems = inferencer.predict_windows_checked(np.concatenate([good[:1], huge, good[1:]]))
    assert list(problems) == [1] and "non-finite" in problems[1]
    assert np.isnan(probs[1]).all() and np.isfinite(probs[[0, 2]]).all()
    with pytest.raises(RequestError, match="non-finite values"):
        inferencer.predict_signal(np.full(4096, 3e38, np.float32), fs=FS)


def test_predict_exits_2_on_an_unusable_signal_instead_of_a_nan_verdict(model_path, tmp_path, capsys):
    np.save(tmp_path / "huge.npy", np.full(4096, 3e38, np.float32))
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).standard_normal(4096).astype(np.float32))
    assert main(["predict", "--model", str(model_path), "--json", str(tmp_path / "huge.npy")]) == 2
    assert "non-finite values" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_path), "--json", str(tmp_path / "ok.npy")]) == 0
    out = json.loads(capsys.readouterr().out)  # strict JSON: no NaN
    assert out["label"] in ("a", "b") and abs(sum(out["probabilities"].values()) - 1) < 1e-5
    np.save(tmp_path / "stack.npy", np.zeros((16, 4096), np.float32))
    assert main(["predict", "--model", str(model_path), str(tmp_path / "stack.npy")]) == 2
    assert "16 channel(s)" in capsys.readouterr().err
