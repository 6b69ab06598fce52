from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
from scipy.signal import ShortTimeFFT
from scipy.signal.windows import hann

import signal2image
from signal2image import CwtTransform, StftTransform

FS = 12800.0


def _sine(freq: float, n: int = 2048, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(n) / FS + phase).astype(np.float32)


@pytest.mark.parametrize(
    "transform",
    [
        CwtTransform(fs=FS, image_size=48, n_scales=32, f_min=100, f_max=6000),
        StftTransform(fs=FS, image_size=40, nperseg=128, hop=32),
    ],
)
def test_shape_range_roundtrip_and_batch(transform):
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((5, 2048)).astype(np.float32)
    out = transform(windows)
    size = transform.image_size
    assert out.shape == (5, 3, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6  # mean = std = 0.5
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # one sensor -> grey RGB
    rebuilt = signal2image.from_dict(transform.to_dict())
    assert rebuilt.to_dict() == transform.to_dict()
    assert torch.equal(rebuilt(windows), out)
    one_by_one = torch.cat([transform(windows[i : i + 1]) for i in range(5)])
    assert torch.allclose(one_by_one, out, atol=1e-5)


def test_cwt_sine_peaks_at_its_frequency_and_matches_pywt():
    t = CwtTransform(fs=FS, n_scales=48, f_min=100, f_max=6000)
    for f0 in (400.0, 1500.0, 4000.0):
        mag = t.magnitude(_sine(f0)[None])[0].numpy()  # (scales, L)
        row = mag[:, 512:1536].mean(axis=1).argmax()
        assert abs(np.log(t.frequencies_[row] / f0)) < np.log(6000 / 100) / 47 * 1.5
    x = _sine(700.0)[None]
    ref, _ = pywt.cwt(x[0], t.scales_, "cmor1.5-1.0", sampling_period=1 / FS, method="conv")
    exact = CwtTransform(fs=FS, n_scales=48, f_min=100, f_max=6000, sampling="full")
    assert np.max(np.abs(exact.magnitude(x)[0].numpy() - np.abs(ref))) <= 1e-3 * np.abs(ref).max()
    # The band-limited filters of sampling "output" differ from pywt's rounded ones only off the band.
    assert np.max(np.abs(t.magnitude(x)[0].numpy() - np.abs(ref))) <= 2e-2 * np.abs(ref).max()


def test_stft_sine_peaks_in_the_right_bin_and_matches_scipy():
    t = StftTransform(fs=FS, nperseg=256, hop=64)
    mag = t.magnitude(_sine(1000.0)[None])[0].numpy()  # (129, frames)
    assert abs(t.frequencies(2048)[mag.mean(axis=1).argmax()] - 1000.0) <= FS / 256
    x = np.random.default_rng(1).standard_normal(2048).astype(np.float32)
    sft = ShortTimeFFT(hann(256, sym=False), hop=64, fs=FS, scale_to=None)
    ref = np.abs(sft.stft(x, p0=sft.lower_border_end[1], p1=sft.upper_border_begin(2048)[1]))
    got = t.magnitude(x[None])[0].numpy()
    assert got.shape == ref.shape
    assert np.allclose(got, ref, atol=1e-3 * ref.max())


def test_three_sensors_map_to_rgb():
    t = StftTransform(fs=FS, image_size=32, nperseg=128, hop=64)
    x = np.stack([_sine(500), _sine(2000), _sine(4000)])[None]  # (1, 3, 2048)
    out = t(x)
    assert not torch.equal(out[0, 0], out[0, 1]) and not torch.equal(out[0, 1], out[0, 2])
    assert torch.equal(out[0, 1], t(x[:, 1])[0, 0])


def test_invalid_settings_name_the_fix():
    with pytest.raises(ValueError, match="not a continuous wavelet"):
        CwtTransform(fs=FS, wavelet="db4")
    with pytest.raises(ValueError, match="fs/2"):
        CwtTransform(fs=FS, f_max=FS)
    with pytest.raises(ValueError, match="unknown transform kind"):
        signal2image.from_dict({"kind": "wigner"})


@pytest.mark.parametrize(
    "wavelet", ["cmor1.5-1.0", "morl", "mexh", "cgau4", "shan1.5-1.0", "fbsp1-1.5-1.0", "gaus2"]
)
def test_filter_bank_computes_what_pywt_cwt_computes(wavelet):
    from signal2image.filterbank import CwtFilterBank

    w = pywt.ContinuousWavelet(wavelet)
    scales = pywt.frequency2scale(w, np.geomspace(50, 5000, 24) / FS)  # 50 Hz: filters longer than the window
    x = np.random.default_rng(2).standard_normal((5, 1024))
    ref, _ = pywt.cwt(x, scales, w, sampling_period=1 / FS, method="fft", axis=-1)
    ref = np.transpose(ref, (1, 0, 2))  # (N, scales, L)
    bank = CwtFilterBank(w, scales, 1024, chunk=2)
    got = bank.coefficients(x.astype(np.float32)).numpy()
    assert got.shape == ref.shape and np.iscomplexobj(got) == np.iscomplexobj(ref)
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.abs(ref).max()
    assert np.allclose(bank.magnitude(x).numpy(), np.abs(got), atol=1e-6 * np.abs(ref).max())


def test_reshape_to_grid_is_exact_and_gaf_is_a_gram_matrix():
    from signal2image import GafTransform, GridTransform

    x = np.random.default_rng(4).standard_normal((3, 1000)).astype(np.float32)
    grid = GridTransform(fs=FS, image_size=31).grid(x)  # side = isqrt(1000) = 31
    first = x[0, : 31 * 31]
    assert grid.shape == (3, 31, 31)
    assert np.allclose(
        grid[0].numpy(), ((first - first.min()) / (first.max() - first.min())).reshape(31, 31), atol=1e-6
    )
    out = GridTransform(fs=FS, image_size=31)(x)  # no resize needed at this size: the same grid
    assert torch.allclose((out[:, 0] + 1) / 2, grid, atol=1e-5)
    gaf = GafTransform(fs=FS, image_size=20)
    img = gaf._to_unit_image(x)
    assert img.shape == (3, 20, 20) and torch.allclose(img, img.transpose(1, 2), atol=1e-6)
    paa = x[0].reshape(20, 50).mean(axis=1)
    scaled = (paa - paa.min()) / (paa.max() - paa.min()) * 2 - 1
    assert np.allclose(img[0].diagonal().numpy(), ((2 * scaled**2 - 1) + 1) / 2, atol=1e-5)  # cos(2 phi)
    for t in (GridTransform(fs=FS, image_size=16), gaf):
        assert signal2image.from_dict(t.to_dict()).to_dict() == t.to_dict()
