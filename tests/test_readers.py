"""Every reader's round trip: a small file written with the format's own library, read back."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.ingest import load_recordings
from pipeline.ingest.files import read_signal_file, read_ucr_tsv
from tests.conftest import ROOT

FS = 12000.0
SIG = np.random.default_rng(0).standard_normal((2, 600)).astype(np.float32)


def test_csv_with_time_column_gives_fs_and_named_channels(tmp_path):
    t = np.arange(600) / FS
    np.savetxt(
        tmp_path / "a.csv",
        np.column_stack([t, SIG.T]),
        delimiter=",",
        header="time,accel_x,accel_y",
        comments="",
    )
    got = read_signal_file(tmp_path / "a.csv")
    assert got.fs == pytest.approx(FS, rel=1e-6) and got.channels == ["accel_x", "accel_y"]
    assert np.allclose(got.data, SIG, atol=1e-6)
    assert np.array_equal(got.select("accel_y", "a.csv"), got.data[1:2])
    with pytest.raises(UserError, match=r"available channels: \['accel_x', 'accel_y'\]"):
        got.select("accel_z", "a.csv")
    np.savetxt(tmp_path / "b.csv", SIG.T, delimiter=";")  # no header, semicolons
    assert np.allclose(read_signal_file(tmp_path / "b.csv").data, SIG, atol=1e-6)


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", SIG.T)  # samples x channels
    assert np.array_equal(read_signal_file(tmp_path / "a.npy").data, SIG)
    np.savez(tmp_path / "b.npz", x=SIG[0], y=SIG[1], fs=FS)
    got = read_signal_file(tmp_path / "b.npz")
    assert got.channels == ["x", "y"] and got.fs == FS and np.array_equal(got.data, SIG)


def test_matlab_v5_cwru_naming_and_v73(tmp_path):
    import h5py
    import scipy.io

    scipy.io.savemat(
        tmp_path / "97.mat",
        {"X097_DE_time": SIG[0][:, None], "X097_FE_time": SIG[1][:, None], "X097RPM": np.array([[1796]])},
    )
    got = read_signal_file(tmp_path / "97.mat")
    assert got.channels == ["DE", "FE"] and got.extra == {"rpm": 1796.0} and got.fs is None
    assert np.allclose(got.data, SIG)
    with h5py.File(tmp_path / "v73.mat", "w") as f:  # MATLAB 7.3 stores column vectors transposed
        f["vib"] = SIG[0][None, :]
        f["fs"] = np.array([[FS]])
    got = read_signal_file(tmp_path / "v73.mat")
    assert got.channels == ["vib"] and got.fs == FS and np.allclose(got.data, SIG[:1])


@pytest.mark.parametrize("dtype,scale", [(np.int16, 32768), (np.int32, 2**31), (np.float32, 1)])
def test_wav_int_and_float_multichannel(tmp_path, dtype, scale):
    from scipy.io import wavfile

    values = (np.clip(SIG.T / 4, -1, 0.999) * (scale if scale > 1 else 1)).astype(dtype)
    wavfile.write(tmp_path / "a.wav", int(FS), values)
    got = read_signal_file(tmp_path / "a.wav")
    assert got.fs == FS and got.data.shape == (2, 600)
    assert np.allclose(got.data, values.T.astype(np.float64) / (scale if scale > 1 else 1), atol=1e-6)


def test_tdms_fs_from_wf_increment(tmp_path):
    from nptdms import ChannelObject, TdmsWriter

    with TdmsWriter(tmp_path / "a.tdms") as writer:
        writer.write_segment(
            [
                ChannelObject("gearbox", name, SIG[i], properties={"wf_increment": 1 / FS})
                for i, name in enumerate(("acc1", "acc2"))
            ]
        )
    got = read_signal_file(tmp_path / "a.tdms")
    assert got.channels == ["gearbox/acc1", "gearbox/acc2"] and got.fs == pytest.approx(FS)
    assert np.allclose(got.data, SIG)


def test_parquet(tmp_path):
    import pandas as pd

    pd.DataFrame({"t": np.arange(600) / FS, "a": SIG[0], "b": SIG[1]}).to_parquet(tmp_path / "a.parquet")
    got = read_signal_file(tmp_path / "a.parquet")
    assert got.channels == ["a", "b"] and got.fs == pytest.approx(FS) and np.allclose(got.data, SIG)


def test_ucr_tsv(tmp_path):
    rows = np.column_stack([[1, -1, 1], np.arange(15).reshape(3, 5)])
    np.savetxt(tmp_path / "X_TRAIN.tsv", rows, delimiter="\t")
    labels, series = read_ucr_tsv(tmp_path / "X_TRAIN.tsv")
    assert labels == ["1", "-1", "1"] and series.shape == (3, 5) and series[2, 4] == 14
    (tmp_path / "bad.tsv").write_text("1\tnan\t2\n")
    with pytest.raises(UserError, match="NaN"):
        read_ucr_tsv(tmp_path / "bad.tsv")


def test_folder_fs_from_files_resampling_and_nan_policy(tmp_path):
    from scipy.io import wavfile

    for label in ("good", "bad"):
        (tmp_path / label).mkdir()
        for i in range(3):
            wavfile.write(tmp_path / label / f"{i}.wav", int(FS), SIG.T.copy())
    base = [f"data.folder.path={tmp_path}", "data.folder.fs=null", "transform.cwt.f_max=2500"]
    recs = load_recordings(load_config(ROOT / "configs" / "folder_example.yaml", base).data)
    assert all(r.fs == FS for r in recs) and len(recs) == 6
    with pytest.raises(UserError, match="set data.folder.resample: true"):
        load_recordings(
            load_config(ROOT / "configs" / "folder_example.yaml", base + ["data.folder.fs=6000"]).data
        )
    half = load_recordings(
        load_config(
            ROOT / "configs" / "folder_example.yaml",
            base + ["data.folder.fs=6000", "data.folder.resample=true"],
        ).data
    )
    assert all(r.fs == 6000 and r.signal.shape == (1, 300) for r in half)
    bad = SIG.T.copy()
    bad[3, 0] = np.nan
    np.save(tmp_path / "bad" / "nan.npy", bad)
    with pytest.raises(UserError, match="NaN or Inf"):
        load_recordings(
            load_config(ROOT / "configs" / "folder_example.yaml", base + ["data.folder.fs=12000"]).data
        )
    report: dict = {}
    kept = load_recordings(
        load_config(
            ROOT / "configs" / "folder_example.yaml",
            base + ["data.folder.fs=12000", "data.folder.nan_policy=drop"],
        ).data,
        report,
    )
    assert len(kept) == 6 and report["nan_dropped"] == [str(tmp_path / "bad" / "nan.npy")]
    (tmp_path / "bad" / "nan.npy").unlink()
    (tmp_path / "good" / "0.wav").write_bytes(b"RIFFjunk")
    with pytest.raises(UserError, match="0.wav: cannot read the signal"):
        load_recordings(load_config(ROOT / "configs" / "folder_example.yaml", base).data)


def test_ucr_source_keeps_the_official_test_split(tmp_path):
    from pipeline.data import prepare_data

    rng = np.random.default_rng(0)
    for part, n in (("TRAIN", 40), ("TEST", 12)):
        labels = np.tile([-1, 1], n // 2)
        series = rng.standard_normal((n, 64)) + labels[:, None] * np.sin(np.arange(64) / 3)
        np.savetxt(tmp_path / f"Toy_{part}.tsv", np.column_stack([labels, series]), delimiter="\t")
    overrides = [
        f"data.ucr.train={tmp_path / 'Toy_TRAIN.tsv'}",
        f"data.ucr.test={tmp_path / 'Toy_TEST.tsv'}",
        "data.ucr.dataset=Toy",
        "data.window.length=64",
        "data.window.hop=64",
        "transform.image_size=32",
        "transform.stft.nperseg=32",  # the config's 128 is longer than these 64-sample series
    ]
    cfg = load_config(ROOT / "configs" / "forda.yaml", overrides)
    data = prepare_data(cfg, echo=lambda s: None)
    assert len(data.windows["test"]) == 12 and all("-test-" in r for r in data.windows["test"].recording_ids)
    assert len(data.windows["train"]) + len(data.windows["val"]) == 40
    assert len(data.windows["val"]) == 8  # 20 % of the training file, stratified
    assert set(data.classes) == {"-1", "1"}
    with pytest.raises(UserError, match="not in the installed archive|install the UCR archive package"):
        load_recordings(load_config(ROOT / "configs" / "forda.yaml", ["data.ucr.dataset=NoSuchSet"]).data)
