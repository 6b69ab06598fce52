from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.ingest import load_recordings
from pipeline.ingest.files import read_signal_file
from pipeline.ingest.split import split_by_recording
from tests.conftest import ROOT


def test_folder_of_npy_and_csv_files(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("good", "bad"):
        (tmp_path / label).mkdir()
        for i in range(3):
            sig = rng.standard_normal((3000, 2)).astype(np.float32)  # samples x channels
            if i == 2:
                np.savetxt(tmp_path / label / f"r{i}.csv", sig, delimiter=",", header="a,b", comments="")
            else:
                np.save(tmp_path / label / f"r{i}.npy", sig)
    cfg = load_config(
        ROOT / "configs" / "folder_example.yaml", [f"data.folder.path={tmp_path}", "data.folder.channel=1"]
    )
    recs = load_recordings(cfg.data)
    assert sorted(r.label for r in recs) == ["bad"] * 3 + ["good"] * 3
    assert all(r.signal.shape == (1, 3000) and r.fs == 12800 for r in recs)
    csv = next(r for r in recs if r.id == "good/r2.csv")
    assert np.allclose(
        csv.signal[0], np.loadtxt(tmp_path / "good" / "r2.csv", delimiter=",", skiprows=1)[:, 1], atol=1e-6
    )
    split = split_by_recording(recs, cfg.data.split)
    assert sum(len(p) for p in split.parts().values()) == 6
    with pytest.raises(UserError, match=r"channel 5 requested but the file has 2 channel\(s\)"):
        load_recordings(
            load_config(
                ROOT / "configs" / "folder_example.yaml",
                [f"data.folder.path={tmp_path}", "data.folder.channel=5"],
            ).data
        )


def test_folder_errors(tmp_path):
    cfg = load_config(ROOT / "configs" / "folder_example.yaml", [f"data.folder.path={tmp_path / 'nope'}"])
    with pytest.raises(UserError, match="is not a folder"):
        load_recordings(cfg.data)
    (tmp_path / "only").mkdir()
    np.save(tmp_path / "only" / "a.npy", np.zeros(10))
    cfg = load_config(ROOT / "configs" / "folder_example.yaml", [f"data.folder.path={tmp_path}"])
    with pytest.raises(UserError, match="at least two"):
        load_recordings(cfg.data)


def test_signal_file_errors(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,x\n")
    with pytest.raises(UserError, match="cannot read"):
        read_signal_file(tmp_path / "t.csv")
    (tmp_path / "s.xyz").write_bytes(b"RIFF")
    with pytest.raises(UserError, match="unsupported signal file type"):
        read_signal_file(tmp_path / "s.xyz")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(UserError, match="1-D or 2-D"):
        read_signal_file(tmp_path / "cube.npy")
