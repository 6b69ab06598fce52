from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import SimulatorConfig, SplitConfig
from pipeline.errors import UserError
from pipeline.ingest.recording import Recording
from pipeline.ingest.simulator import GearboxSimulator
from pipeline.ingest.split import LeakageError, Split, assert_disjoint, split_by_recording
from pipeline.ingest.windows import cut_windows, make_windows, window_starts


@pytest.fixture(scope="module")
def recordings():
    return GearboxSimulator(SimulatorConfig(recordings_per_class=7, duration_s=0.3)).recordings()


def test_no_recording_in_two_splits_and_every_class_everywhere(recordings):
    split = split_by_recording(recordings, SplitConfig())
    ids = {name: {r.id for r in recs} for name, recs in split.parts().items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert set().union(*ids.values()) == {r.id for r in recordings}
    for name, recs in split.parts().items():
        assert {r.label for r in recs} == {r.label for r in recordings}, name
    # Windows inherit the split: overlapping windows of one recording never cross splits.
    classes = sorted({r.label for r in recordings})
    windows = {name: make_windows(recs, classes, 1024, 256) for name, recs in split.parts().items()}
    owners = {name: set(ws.recording_ids) for name, ws in windows.items()}
    assert (
        not owners["train"] & owners["test"]
        and not owners["train"] & owners["val"]
        and not owners["val"] & owners["test"]
    )
    # Same seed, same split; another seed, another split.
    again = split_by_recording(recordings, SplitConfig())
    assert [r.id for r in again.test] == [r.id for r in split.test]
    other = split_by_recording(recordings, SplitConfig(seed=1))
    assert [r.id for r in other.test] != [r.id for r in split.test]


def test_guard_refuses_overlap():
    sig = np.zeros((1, 100), np.float32)
    a = Recording("a", "x", sig, 1000.0, {"file": "/data/x/1.npy"})
    b = Recording("b", "x", sig, 1000.0, {"file": "/data/x/1.npy"})  # same file under another id
    with pytest.raises(LeakageError, match="file:/data/x/1.npy"):
        assert_disjoint(Split(train=(a,), val=(), test=(b,)))
    with pytest.raises(LeakageError, match="unit:a"):
        assert_disjoint(Split(train=(a,), val=(a,), test=()))
    with pytest.raises(LeakageError, match="unique"):
        split_by_recording([a, a], SplitConfig())


def test_too_few_recordings_names_the_class():
    recs = GearboxSimulator(SimulatorConfig(recordings_per_class=3, duration_s=0.1)).recordings()
    recs = [r for r in recs if not (r.label == "wear" and r.id != "wear-0000")]
    with pytest.raises(UserError, match="class 'wear' has 1 recording"):
        split_by_recording(recs, SplitConfig())


def test_windows_overlap_and_count():
    signal = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)
    starts = window_starts(1000, 256, 128)
    assert list(starts) == list(range(0, 1000 - 256 + 1, 128))
    w = cut_windows(signal, 256, 128)
    assert w.shape == (len(starts), 2, 256)
    assert np.array_equal(w[1, 0, :128], w[0, 0, 128:])  # 50 % overlap
    assert np.array_equal(w[3, 1], signal[1, 3 * 128 : 3 * 128 + 256])
    assert cut_windows(signal[:, :100], 256, 128).shape[0] == 0


def test_short_recordings_are_skipped_and_reported():
    long = Recording("long", "a", np.ones((1, 600), np.float32), 1000.0)
    short = Recording("short", "b", np.ones((1, 100), np.float32), 1000.0)
    ws = make_windows([long, short], ["a", "b"], 256, 256)
    assert len(ws) == 2 and ws.skipped == ("short",) and ws.recording_ids == ("long",)


def test_window_in_seconds(tmp_path):
    from pipeline.config import load_config
    from pipeline.data import prepare_data

    cfg = load_config(
        None,
        [
            "data.simulator.recordings_per_class=3",
            "data.simulator.duration_s=0.5",
            "data.window.length_s=0.08",
            "data.window.hop_s=0.04",
            "transform.image_size=16",
            "transform.cwt.n_scales=8",
            f"data.cache_dir={tmp_path}",
        ],
    )
    data = prepare_data(cfg, echo=lambda s: None)
    assert data.window == {"length": 1024, "hop": 512}  # 0.08 s and 0.04 s at 12.8 kHz
    assert data.windows["train"].x.shape[-1] == 1024 and len(data.windows["train"]) == 5 * 11
    with pytest.raises(UserError, match="at least 16 samples"):
        prepare_data(
            load_config(None, ["data.window.length_s=0.0001", f"data.cache_dir={tmp_path}"]),
            echo=lambda s: None,
        )
