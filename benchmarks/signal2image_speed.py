"""Speed of the signal-to-image transforms against the reference libraries, interleaved.

CWT: 256 windows x 2048 samples, 64 log-spaced scales (50 Hz - 5 kHz at 12.8 kHz), PyWavelets'
real Morlet `morl` (or --wavelet); this project's filter bank vs `pywt.cwt(method='fft')` (same
wavelet and scales, float32 input as ours; checked for equality against pywt on float64 input)
and `ssqueezepy.cwt` (its own analytic Morlet, 64 scales; speed only).
STFT magnitude: same windows, nperseg 256, hop 128; this project's transform vs
`scipy.signal.ShortTimeFFT` (checked for equality).

Each round runs every method once, in turn; the report gives the median of the per-round
speed ratios, the number that survives a noisy shared machine.

    python benchmarks/signal2image_speed.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import pywt
import torch
from scipy.signal import ShortTimeFFT
from scipy.signal.windows import hann

from signal2image import CwtTransform, StftTransform
from signal2image.errors import install_hint

FS, N_WINDOWS, LENGTH, N_SCALES = 12800.0, 256, 2048, 64


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 gives steadier numbers on a shared machine)"
    )
    parser.add_argument(
        "--wavelet", default="morl", help="PyWavelets continuous wavelet (complex ones cost two inverse FFTs)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).standard_normal((N_WINDOWS, LENGTH)).astype(np.float32)

    cwt = CwtTransform(fs=FS, wavelet=args.wavelet, f_min=50, f_max=5000, n_scales=N_SCALES)
    wavelet = pywt.ContinuousWavelet(args.wavelet)
    x64 = x[:16].astype(np.float64)
    exact = np.abs(
        np.transpose(
            pywt.cwt(x64, cwt.scales_, wavelet, sampling_period=1 / FS, method="fft", axis=-1)[0], (1, 0, 2)
        )
    )
    err_cwt = float(np.abs(cwt.magnitude(x[:16]).numpy() - exact).max() / exact.max())
    cwt.magnitude(x[:2])  # builds the filter bank once, as a running service would
    try:
        import ssqueezepy

        sq_scales = np.geomspace(2, 256, N_SCALES).astype(np.float32)
        ssqueezepy.cwt(x[:2], "morlet", scales=sq_scales, fs=FS, astensor=False)  # warm-up (numba compile)
    except ImportError:
        ssqueezepy = None
        print(f"ssqueezepy not installed ({install_hint('bench')}): skipped")

    sft = ShortTimeFFT(hann(256, sym=False), hop=128, fs=FS, scale_to=None)
    p0, p1 = sft.lower_border_end[1], sft.upper_border_begin(LENGTH)[1]
    stft = StftTransform(fs=FS, nperseg=256, hop=128)

    ratios: dict[str, list[float]] = {
        "cwt vs pywt fft": [],
        "cwt (reused out) vs pywt": [],
        "cwt vs ssqueezepy": [],
        "stft vs ShortTimeFFT": [],
    }
    times: dict[str, list[float]] = {
        k: [] for k in ("ours cwt", "ours cwt, out=", "pywt fft", "ssqueezepy", "ours stft", "ShortTimeFFT")
    }
    bank = cwt.filter_bank(LENGTH)
    buffer = torch.empty((N_WINDOWS, N_SCALES, LENGTH))
    err_stft = 0.0
    for _ in range(args.rounds):
        t_ours, ours = timed(lambda: cwt.magnitude(x))
        t_pywt, _ = timed(
            lambda: pywt.cwt(x, cwt.scales_, wavelet, sampling_period=1 / FS, method="fft", axis=-1)
        )
        t_reuse, _ = timed(
            lambda: bank.magnitude(x, out=buffer)
        )  # a stream or service reusing its output buffer
        times["ours cwt"].append(t_ours)
        times["ours cwt, out="].append(t_reuse)
        times["pywt fft"].append(t_pywt)
        ratios["cwt vs pywt fft"].append(t_pywt / t_ours)
        ratios["cwt (reused out) vs pywt"].append(t_pywt / t_reuse)
        if ssqueezepy is not None:
            t_sq, _ = timed(lambda: ssqueezepy.cwt(x, "morlet", scales=sq_scales, fs=FS, astensor=False))
            times["ssqueezepy"].append(t_sq)
            ratios["cwt vs ssqueezepy"].append(t_sq / t_ours)
        t_st, ours_st = timed(lambda: stft.magnitude(x))
        t_sc, ref_st = timed(lambda: np.abs(sft.stft(x, p0=p0, p1=p1, axis=-1)))
        err_stft = max(err_stft, float(np.abs(ours_st.numpy() - ref_st).max() / ref_st.max()))
        times["ours stft"].append(t_st)
        times["ShortTimeFFT"].append(t_sc)
        ratios["stft vs ShortTimeFFT"].append(t_sc / t_st)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch threads {args.threads}; wavelet {args.wavelet}; rounds {args.rounds}"
    )
    for name, values in times.items():
        if values:
            print(
                f"  {name:14s} median {statistics.median(values) * 1e3:8.1f} ms = "
                f"{N_WINDOWS / statistics.median(values):9.0f} windows/s"
            )
    for name, values in ratios.items():
        if values:
            print(
                f"  speed-up {name:22s} median {statistics.median(values):6.1f}x "
                f"(min {min(values):.1f}x, max {max(values):.1f}x)"
            )
    print(
        f"  |CWT| max |ours - pywt.cwt (float64)| / max = {err_cwt:.1e};  "
        f"STFT max |ours - ShortTimeFFT| / max = {err_stft:.1e}"
    )


if __name__ == "__main__":
    main()
