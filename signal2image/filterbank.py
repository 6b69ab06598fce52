"""A batched FFT filter bank that computes what `pywt.cwt` computes, many times faster.

`pywt.cwt(x, scales, wavelet, method=...)` convolves x with the integrated wavelet resampled at
each scale, differentiates, scales by -sqrt(scale) and crops the centre. The same result is a
single convolution per scale with the first difference of that filter, shifted by the crop
offset. This module builds those filters once per (wavelet, scales, window length), in the
frequency domain, and applies all of them to a chunk of windows with one forward real FFT and
one (real wavelet) or two (complex wavelet: real and imaginary parts) inverse real FFTs.
"""

from __future__ import annotations

import numpy as np
import pywt
import torch
from scipy.fft import next_fast_len


class CwtFilterBank:
    """|CWT| (or the complex CWT) of float32 windows of one length, matching `pywt.cwt`.

    Args:
        wavelet: a PyWavelets continuous wavelet.
        scales: the scales, as given to `pywt.cwt`.
        length: the window length in samples.
        precision: `pywt.integrate_wavelet` precision (pywt.cwt's default is 12).
        chunk: windows per FFT batch (bounds the (chunk, scales, fft) intermediate).
    """

    def __init__(self, wavelet: pywt.ContinuousWavelet, scales: np.ndarray, length: int, *, precision: int = 12, chunk: int = 16) -> None:
        self.length = int(length)
        self.chunk = int(chunk)
        self.complex = bool(wavelet.complex_cwt)
        int_psi, x = pywt.integrate_wavelet(wavelet, precision=precision)
        int_psi = np.conj(int_psi) if self.complex else np.asarray(int_psi)
        step = x[1] - x[0]
        filters, offsets = [], []
        for scale in np.asarray(scales, dtype=np.float64):
            # Exactly pywt.cwt's resampling of the integrated wavelet at this scale.
            j = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
            j = j[j < int_psi.size]
            h = int_psi[j][::-1]
            if len(h) < 2:
                raise ValueError(f"scale {scale} is too small for this wavelet (pywt.cwt refuses it too); raise f_min or lower f_max")
            # diff(x * h) == (x * h')[1:], h' = first difference of h padded with zeros.
            h_diff = np.diff(np.concatenate([[0.0], h, [0.0]])) * -np.sqrt(scale)
            filters.append(h_diff)
            offsets.append(1 + int(np.floor((len(h) - 2) / 2)))  # pywt's centre crop
        # Outputs n + offset (n < length) of a filter of length L alias-free need an FFT of at least
        # length + (L - offset): about length + L/2, not length + L.
        self.fft_length = next_fast_len(self.length + max(len(f) - off for f, off in zip(filters, offsets)) + 1)
        n_freq = self.fft_length // 2 + 1
        k = np.arange(n_freq)
        real_bank = np.empty((len(filters), n_freq), dtype=np.complex128)
        imag_bank = np.empty((len(filters), n_freq), dtype=np.complex128)
        for i, (f, off) in enumerate(zip(filters, offsets)):
            shift = np.exp(2j * np.pi * k * off / self.fft_length)  # advance by the crop offset
            real_bank[i] = np.fft.rfft(np.real(f), self.fft_length) * shift
            imag_bank[i] = np.fft.rfft(np.imag(f), self.fft_length) * shift
        self.real_bank_ = torch.from_numpy(real_bank.astype(np.complex64))
        self.imag_bank_ = torch.from_numpy(imag_bank.astype(np.complex64)) if self.complex else None

    def _chunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real and imaginary parts (views, (B, S, length)) for a chunk of windows."""
        spec = torch.fft.rfft(x, n=self.fft_length)[:, None, :]  # (B, 1, F): each window's FFT, once
        # Two real inverse FFTs (real and imaginary filter parts) beat one complex FFT of the same length.
        re = torch.fft.irfft(spec * self.real_bank_, n=self.fft_length)[..., : self.length]
        im = torch.fft.irfft(spec * self.imag_bank_, n=self.fft_length)[..., : self.length] if self.imag_bank_ is not None else None
        return re, im

    def magnitude(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, length) -> |CWT| as float32 (N, n_scales, length)."""
        x = torch.as_tensor(np.ascontiguousarray(windows, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.length:
            raise ValueError(f"windows must be (N, {self.length}), got {tuple(x.shape)}")
        out = torch.empty((x.shape[0], self.real_bank_.shape[0], self.length), dtype=torch.float32)
        for start in range(0, x.shape[0], self.chunk):
            re, im = self._chunk(x[start : start + self.chunk])
            target = out[start : start + len(re)]
            torch.hypot(re, im, out=target) if im is not None else torch.abs(re, out=target)
        return out

    def coefficients(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, length) -> the CWT coefficients (N, n_scales, length), complex64 or float32."""
        x = torch.as_tensor(np.ascontiguousarray(windows, dtype=np.float32))
        parts = [self._chunk(x[s : s + self.chunk]) for s in range(0, x.shape[0], self.chunk)]
        re = torch.cat([p[0] for p in parts])
        return torch.complex(re, torch.cat([p[1] for p in parts])) if self.complex else re
