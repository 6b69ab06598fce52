from __future__ import annotations

import os

import numpy as np
import torch

from pipeline.config import load_config
from pipeline.data import prepare_data
from pipeline.export import drift_inputs
from tests.conftest import ROOT, TINY_JOB, write_config


def _prepare(cfg):
    lines: list[str] = []
    return prepare_data(cfg, echo=lines.append), "\n".join(lines)


def test_second_preparation_maps_the_cache_and_changes_invalidate_it(workdir):
    cfg = load_config(write_config(workdir / "tiny.yaml", TINY_JOB))
    first, log1 = _prepare(cfg)
    second, log2 = _prepare(cfg)
    assert "(cached)" not in log1 and "(cached)" in log2
    for name in ("train", "val", "test"):
        assert torch.equal(first.images[name], second.images[name])
        assert np.array_equal(first.windows[name].y, second.windows[name].y)
        assert first.windows[name].recording_ids == second.windows[name].recording_ids
    assert first.fingerprint() == second.fingerprint() and first.report() == second.report()
    assert second.transform.to_dict() == first.transform.to_dict()
    # A cache hit keeps each recording's operating condition: the drift reference is built from them.
    fresh = {u.id: u.condition for u in first.split.train}
    assert {u.id: u.condition for u in second.split.train} == fresh
    assert all(isinstance(c.get("rpm"), float) for c in fresh.values())
    a, b = drift_inputs(first), drift_inputs(second)
    assert np.array_equal(a[1], b[1]) and a[2] == b[2] and np.array_equal(a[3], b[3])
    assert np.isfinite(b[1]).all()
    _, log3 = _prepare(load_config(workdir / "tiny.yaml", ["transform.image_size=48"]))
    assert "(cached)" not in log3  # another transform, another entry
    _, log4 = _prepare(load_config(workdir / "tiny.yaml", ["data.simulator.seed=3"]))
    assert "(cached)" not in log4
    assert len(os.listdir(workdir / ".cache" / "pipeline")) == 3
    _, log5 = _prepare(load_config(workdir / "tiny.yaml", ["data.cache=false", "data.simulator.seed=4"]))
    assert "(cached)" not in log5 and len(os.listdir(workdir / ".cache" / "pipeline")) == 3


def test_the_cache_is_keyed_on_the_input_channels(workdir):
    # model.in_channels changes the transform (channels, the backbone's mean/std averaged to one).
    path = write_config(workdir / "tiny.yaml", TINY_JOB)
    rgb, _ = _prepare(load_config(path, ["model.in_channels=3"]))
    grey, log = _prepare(load_config(path, ["model.in_channels=1"]))
    assert "(cached)" not in log
    assert rgb.images["train"].shape[1] == 3
    assert all(grey.images[name].shape[1] == 1 for name in ("train", "val", "test"))
    assert grey.transform.to_dict()["channels"] == 1 and len(grey.transform.mean) == 1
    assert "(cached)" in _prepare(load_config(path, ["model.in_channels=1"]))[1]


def test_a_changed_source_file_invalidates_the_cache(workdir):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (workdir / "sig" / label).mkdir(parents=True)
        for i in range(3):
            np.save(workdir / "sig" / label / f"{i}.npy", rng.standard_normal(4096).astype(np.float32))
    overrides = [
        f"data.folder.path={workdir / 'sig'}",
        "data.window.length=1024",
        "data.window.hop=1024",
        "transform.image_size=32",
        "transform.cwt.n_scales=16",
    ]
    cfg = load_config(ROOT / "configs" / "folder_example.yaml", overrides)
    _prepare(cfg)
    assert "(cached)" in _prepare(cfg)[1]
    np.save(workdir / "sig" / "a" / "0.npy", rng.standard_normal(4096).astype(np.float32))
    os.utime(workdir / "sig" / "a" / "0.npy", ns=(1, 1))  # a different modification time, whatever the clock
    assert "(cached)" not in _prepare(cfg)[1]
