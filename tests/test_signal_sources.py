"""Signal manifests, splits by operating condition or by a split column, amplitude normalisation,
statistics fitted on the training split, and the one-channel backbone."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from scipy.io import wavfile

import signal2image
from deploy.inferencer import OnnxInferencer
from models import build_model
from pipeline.config import SimulatorConfig, SplitConfig, load_config
from pipeline.data import prepare_data
from pipeline.errors import UserError
from pipeline.ingest import load_recordings
from pipeline.ingest.simulator import GearboxSimulator
from pipeline.ingest.split import split_by_condition, split_recordings
from pipeline.ingest.windows import cut_windows
from signal2image.base import zscore
from tests.conftest import ROOT, TINY_JOB, run_cli, write_config

FS = 8000


def _manifest_set(root, rng):
    """Eight recordings of two classes in three formats; two files are segments of one run."""
    rows = ["path,label,recording,channels,fs,rpm,load,split"]
    for label, tone in (("good", 300.0), ("bad", 1100.0)):
        for i in range(4):
            t = np.arange(3000) / FS
            two = np.stack([np.sin(2 * np.pi * tone * t), rng.standard_normal(3000)]).astype(np.float32)
            split = ("train", "train", "val", "test")[i]
            load = (0, 1, 2, 3)[i]
            if i == 0:
                np.save(root / f"{label}{i}.npy", two.T)  # samples x channels, no rate: from the manifest
                rows.append(f"{label}{i}.npy,{label},{label}-run0,0,{FS},1500,{load},{split}")
            elif i == 1:  # a second segment of the same run
                wavfile.write(root / f"{label}{i}.wav", FS, two.T)
                rows.append(f"{label}{i}.wav,{label},{label}-run0,ch0,,1500,{load},{split}")
            else:
                np.savetxt(
                    root / f"{label}{i}.csv",
                    np.column_stack([t, two.T]),
                    delimiter=",",
                    header="time,acc,mic",
                    comments="",
                )
                rows.append(f"{label}{i}.csv,{label},,acc,,1800,{load},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def _folder_cfg(manifest, *overrides):
    return load_config(
        ROOT / "configs" / "folder_example.yaml",
        [
            "data.folder.path=null",
            f"data.folder.manifest={manifest}",
            "data.folder.fs=null",
            "transform.cwt.f_max=3000",
            "transform.cwt.f_min=100",
            *overrides,
        ],
    )


def test_manifest_reads_channels_rates_conditions_and_its_split_column(tmp_path):
    manifest = _manifest_set(tmp_path, np.random.default_rng(0))
    cfg = _folder_cfg(manifest)
    recs = load_recordings(cfg.data)
    assert len(recs) == 8 and all(r.signal.shape == (1, 3000) and r.fs == pytest.approx(FS) for r in recs)
    good0 = next(r for r in recs if r.id == "good0.npy")
    t = np.arange(3000) / FS
    assert np.allclose(
        good0.signal[0], np.sin(2 * np.pi * 300 * t), atol=1e-6
    )  # channel 0 of the npy, as the manifest says
    good2 = next(r for r in recs if r.id == "good2.csv")
    assert np.allclose(good2.signal[0], np.sin(2 * np.pi * 300 * t), atol=1e-5)  # channel "acc" by name
    assert good0.condition["rpm"] == 1500.0 and good2.condition["load"] == 2.0
    assert good0.unit == "good-run0" and next(r for r in recs if r.id == "good1.wav").unit == "good-run0"
    split = split_recordings(recs, cfg.data.split)  # by: auto -> the split column
    assert sorted(r.id for r in split.test) == ["bad3.csv", "good3.csv"]
    assert sorted(r.id for r in split.val) == ["bad2.csv", "good2.csv"]
    # The same manifest, split by operating condition instead: load 3 held out.
    held = split_recordings(recs, SplitConfig(by="condition", condition="load", test_values=(3,)))
    assert {r.condition["load"] for r in held.test} == {3.0}
    assert not {r.unit for r in held.train} & {
        r.unit for r in held.val
    }  # the two segments of a run stay together


def test_manifest_bad_input_names_the_line_and_the_fix(tmp_path):
    manifest = _manifest_set(tmp_path, np.random.default_rng(1))
    text = manifest.read_text()
    (tmp_path / "missing.csv").write_text(text.replace("good3.csv", "nope.csv"))
    with pytest.raises(UserError, match=r"missing.csv, line 5: signal file .*nope.csv' not found"):
        load_recordings(_folder_cfg(tmp_path / "missing.csv").data)
    (tmp_path / "chan.csv").write_text(text.replace(",acc,", ",vib,", 1))
    with pytest.raises(UserError, match=r"no channel 'vib'; available channels: \['acc', 'mic'\]"):
        load_recordings(_folder_cfg(tmp_path / "chan.csv").data)
    (tmp_path / "header.csv").write_text(text.replace("path,label", "file,class"))
    with pytest.raises(UserError, match=r"missing column\(s\) \['path', 'label'\]"):
        load_recordings(_folder_cfg(tmp_path / "header.csv").data)
    (tmp_path / "norate.csv").write_text(text.replace(f",0,{FS},", ",0,,"))
    with pytest.raises(UserError, match="carries no sample rate; set data.folder.fs"):
        load_recordings(_folder_cfg(tmp_path / "norate.csv").data)
    (tmp_path / "rate.csv").write_text(text.replace(f",0,{FS},", ",0,8k,"))
    with pytest.raises(UserError, match=r"line 2: fs '8k' is not a sample rate"):
        load_recordings(_folder_cfg(tmp_path / "rate.csv").data)
    (tmp_path / "two.csv").write_text(text.replace(",acc,", ",acc|mic,", 1))
    with pytest.raises(
        UserError, match=r"selects 2 channel\(s\) \['acc', 'mic'\] but data.folder.channel has 1"
    ):
        load_recordings(_folder_cfg(tmp_path / "two.csv").data)
    # A class only in the test split.
    lines = text.splitlines()
    lines = [ln.replace(",bad,", ",ugly,") if ln.startswith("bad3") else ln for ln in lines]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    recs = load_recordings(_folder_cfg(tmp_path / "labels.csv").data)
    with pytest.raises(UserError, match=r"labels \['ugly'\] are in the test split but not in train"):
        split_recordings(recs, SplitConfig())
    with pytest.raises(UserError, match="by is 'column' but the recordings carry no split column"):
        split_recordings(
            [r for r in recs if r.condition.pop("split", None) or True], SplitConfig(by="column")
        )


def test_split_by_condition_holds_out_the_condition_and_refuses_bad_keys():
    recs = GearboxSimulator(
        SimulatorConfig(recordings_per_class=6, duration_s=0.5, snr_db=(5, 10), severity=(0.6, 1.0))
    ).recordings()
    split = split_by_condition(recs, SplitConfig(by="condition", condition="rpm", test_range=(1900, 2200)))
    assert split.test and all(1900 <= r.condition["rpm"] <= 2200 for r in split.test)
    assert all(not 1900 <= r.condition["rpm"] <= 2200 for r in split.train + split.val)
    assert {r.label for r in split.train} == set(SimulatorConfig().classes)
    with pytest.raises(UserError, match=r"has no 'temperature'; its conditions are \[.*'load'.*'rpm'"):
        split_by_condition(recs, SplitConfig(by="condition", condition="temperature", test_values=(1,)))
    with pytest.raises(UserError, match="holds out every recording"):
        split_by_condition(recs, SplitConfig(by="condition", condition="rpm", test_range=(0, 1e6)))
    with pytest.raises(ValueError, match="by: condition needs exactly one of data.split.test_values"):
        SplitConfig(by="condition", condition="rpm")


def test_window_normalisation_makes_images_gain_and_offset_free_and_a_fitted_level_keeps_energy():
    rng = np.random.default_rng(0)
    t = np.arange(2048) / 12800
    x = (np.sin(2 * np.pi * 1000 * t) + 0.1 * rng.standard_normal(2048)).astype(np.float32)[None]
    common = dict(fs=12800, image_size=32, f_min=100, f_max=6000, n_scales=32)
    fitted = signal2image.CwtTransform(**common)
    fitted.fit(np.concatenate([x, 0.5 * x]), level=True, stats=False)
    assert fitted.level_db is not None
    loud, quiet = fitted.unit_images(np.concatenate([x, 0.1 * x]))
    assert loud.mean() > quiet.mean() + 0.2  # 20 dB quieter is darker against a fixed level
    peak = signal2image.CwtTransform(**common)
    assert torch.allclose(
        *peak.unit_images(np.concatenate([x, 0.1 * x])), atol=1e-5
    )  # each image's own peak: the same
    windowed = signal2image.from_dict({**fitted.to_dict(), "signal_norm": "window"})
    a, b = windowed.unit_images(np.concatenate([x, 7 * x + 3]))
    assert torch.allclose(a, b, atol=1e-4)
    rebuilt = signal2image.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert rebuilt.level_db == fitted.level_db and torch.equal(rebuilt(x), fitted(x))


def test_recording_normalisation_and_fitted_channel_stats_in_prepare_data(workdir):
    job = copy.deepcopy(TINY_JOB)
    job["data"]["normalise"] = "recording"
    job["transform"]["normalise"] = "train"
    job["data"]["cache"] = False
    cfg = load_config(write_config(workdir / "j.yaml", job))
    data = prepare_data(cfg, echo=lambda s: None)
    rec = data.split.train[0]
    first = data.windows["train"].x[data.windows["train"].recording == 0]
    assert np.allclose(first, cut_windows(zscore(rec.signal), 1024, 512), atol=1e-6)
    train = data.images["train"]
    assert torch.allclose(train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    assert data.transform.to_dict()["signal_norm"] == "recording" and data.transform.mean != (0.5, 0.5, 0.5)


def test_one_channel_backbone_sums_the_rgb_filters_exactly():
    rgb = build_model("efficientnet_lite0", num_classes=3, pretrained=True).eval()
    grey = build_model("efficientnet_lite0", num_classes=3, pretrained=True, in_channels=1).eval()
    grey._fc.load_state_dict(rgb._fc.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rgb(x.expand(-1, 3, -1, -1)), grey(x), atol=1e-4)
    assert grey._conv_stem.weight.shape[1] == 1


def test_one_channel_job_split_by_condition_exports_what_the_service_reproduces(tmp_path):
    job = copy.deepcopy(TINY_JOB)
    job["data"]["simulator"]["recordings_per_class"] = 6
    job["data"]["split"] = {"by": "condition", "condition": "rpm", "test_range": [1900, 2200]}
    job["transform"].update({"level": "train", "normalise": "train"})
    job["model"] = {"in_channels": 1}
    job["train"]["strategies"] = [{"name": "finetune", "lr": 1e-3}]
    job["export"] = {"variants": ["int8"], "max_accuracy_drop": 100, "triton_dir": str(tmp_path / "triton")}
    cfg_path = write_config(tmp_path / "grey.yaml", job)
    proc = run_cli("run", str(cfg_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fitted on the training split: level" in proc.stdout
    assert re.search(
        r"export:\s+int8: \S+model.int8.onnx registered as models:/tiny-fault-int8/1", proc.stdout
    ), proc.stdout
    triton = tmp_path / "triton" / "tiny-fault"
    # Triton gets the raw-signal model: one grey channel of raw windows in, the 1-channel image inside.
    assert re.search(
        r'name: "signal"\s+data_type: TYPE_FP32\s+dims: \[ 1, \d+ \]', (triton / "config.pbtxt").read_text()
    )
    assert json.loads((triton / "metadata.json").read_text())["transform"]["channels"] == 1
    onnx_path = tmp_path / re.search(r"ONNX model:\s+(\S+)", proc.stdout).group(1)
    inferencer = OnnxInferencer(onnx_path, prefer_signal_model=False)
    meta = inferencer.metadata
    assert (
        meta.input_shape[1] == 1
        and meta.transform["channels"] == 1
        and meta.transform["level_db"] is not None
    )
    cfg = load_config(cfg_path)
    data = prepare_data(cfg, echo=lambda s: None)  # from the job's cache: the images the model was tested on
    assert data.report()["split"]["by"] == "condition"
    assert all(1900 <= v <= 2200 for v in data.report()["split"]["test"])
    test = data.windows["test"]
    expected = inferencer.predict_inputs(data.images["test"].numpy())
    got = inferencer.predict_windows(
        np.asarray(test.x)
    )  # raw windows through the transform rebuilt from metadata
    assert np.allclose(got, expected, atol=1e-5)
    raw = OnnxInferencer(onnx_path)  # the raw-signal model beside it: the same, transform in the graph
    assert raw.takes_signal and np.allclose(raw.predict_windows(np.asarray(test.x)), expected, atol=1e-4)
