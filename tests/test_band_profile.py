"""The band-profile path (`model.band_profile`): a linear map of each row's mean over time added to
the CNN's logits, trained with the head, exported in the ONNX graph, refused where rows are no bands."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import export_onnx
from models import BandProfile, build_model, layer_groups
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.train import seed_everything
from signal2image import ImageTransform
from tests.conftest import TINY_JOB, run_job_once


def _pair(rows: int = 32) -> tuple[torch.nn.Module, torch.nn.Module]:
    seed_everything(0)
    plain = build_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    seed_everything(0)
    banded = build_model("efficientnet_lite0", num_classes=3, pretrained=False, band_rows=rows).eval()
    return plain, banded


def test_the_path_starts_at_zero_and_adds_a_linear_map_of_the_row_means() -> None:
    plain, banded = _pair()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), banded(x))  # zero at the start: the CNN alone
        band = banded.get_submodule("band_profile")
        assert isinstance(band, BandProfile)
        band.linear.weight.normal_()
        band.linear.bias.fill_(0.5)
        expected = plain(x) + x.mean(dim=(1, 3)) @ band.linear.weight.T + 0.5
        assert torch.allclose(banded(x), expected, atol=1e-5)
        assert not torch.allclose(banded(x), plain(x), atol=1e-2)
    with pytest.raises(ValueError, match="32 rows"):
        banded(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_the_path_trains_with_the_head(backbone: str) -> None:
    model = build_model(backbone, num_classes=2, pretrained=False, band_rows=32)
    groups = dict(layer_groups(model, backbone))
    band_ids = {id(p) for p in model.get_submodule("band_profile").parameters()}
    assert band_ids <= {id(p) for p in groups["head"]}
    assert all(not (band_ids & {id(p) for p in ps}) for g, ps in groups.items() if g != "head")


def test_the_onnx_graph_holds_the_path(tmp_path) -> None:
    _, banded = _pair()
    with torch.no_grad():
        banded.get_submodule("band_profile").linear.weight.normal_()
    x = torch.randn(5, 3, 32, 32)
    path = tmp_path / "banded.onnx"
    transform = ImageTransform(image_size=32)
    meta = ModelMetadata.for_transform(["a", "b", "c"], transform, model=ModelInfo(name="b"))
    export_onnx(banded, x, path, metadata=meta)  # its parity check compares ONNX Runtime with PyTorch
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, banded(x).numpy(), atol=1e-4)


SIGNAL = ["transform.kind=stft", "model.band_profile=true"]


def test_the_config_builds_the_path_for_spectrograms_only() -> None:
    cfg = load_config(None, SIGNAL + ["transform.image_size=48"])
    assert cfg.architecture()["band_rows"] == 48
    assert load_config(None, []).architecture()["band_rows"] is None
    for kind, source in (("grid", "simulator"), ("image", "elpv")):
        with pytest.raises(ConfigError, match=rf"band_profile.*'{kind}'.*cwt or stft"):
            load_config(None, [f"data.source={source}", f"transform.kind={kind}", "model.band_profile=true"])
    with pytest.raises(ConfigError, match=r"band_profile.*linear probe 'linear_probe'"):
        load_config(None, SIGNAL + ["train.strategies=[{name: linear_probe, lr: 0.01}]"])


def test_a_job_trains_exports_and_logs_the_path(tmp_path_factory) -> None:
    """A real `pipeline run` with the path: it trains (its weights leave zero), the exported image and
    raw-signal graphs hold it (the job's parity checks pass), and the logged network rebuilds with it."""
    import re

    import mlflow

    from deploy.inferencer import OnnxInferencer
    from pipeline.export import PYTORCH_ARTIFACTS, load_pytorch_model

    job = {
        **TINY_JOB,
        "transform": {"kind": "stft", "image_size": 32, "stft": {"nperseg": 128, "hop": 32}},
        "model": {"band_profile": True},
        "train": {**TINY_JOB["train"], "strategies": [{"name": "scratch", "lr": 0.003}]},
    }
    work, out = run_job_once(tmp_path_factory, "banded", job)
    onnx_path = work / re.search(r"ONNX model:\s+(\S+)", out).group(1)
    inferencer = OnnxInferencer(onnx_path, prefer_signal_model=False)
    ckpt = onnx_path.parent / "checkpoints" / "scratch.best.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    assert state["band_profile.linear.weight"].abs().sum() > 0  # trained with the network
    run_id = inferencer.metadata.model.run_id
    uri = f"sqlite:///{work / 'mlflow.db'}"
    model = load_pytorch_model(run_id, tracking_uri=uri)
    assert torch.equal(model.state_dict()["band_profile.linear.weight"], state["band_profile.linear.weight"])
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(images).numpy()
    got = inferencer.session.run(None, {"input": images.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    arch = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PYTORCH_ARTIFACTS}/architecture.json")
    assert arch["band_rows"] == 32
