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

TRIM = 1e-4  # interpolated filters: end taps below this fraction of the largest are dropped


class CwtFilterBank:
    """|CWT| (or the complex CWT) of float32 windows of one length, matching `pywt.cwt`.

    Args:
        wavelet: a PyWavelets continuous wavelet.
        scales: the scales, as given to `pywt.cwt`.
        length: the window length in samples.
        precision: `pywt.integrate_wavelet` precision (pywt.cwt's default is 12).
        chunk: windows per FFT batch (bounds the (chunk, scales, fft) intermediate).
        interpolate: the band-limited filters of `wavelet_filters` instead of pywt's own.
    """

    def __init__(
        self,
        wavelet: pywt.ContinuousWavelet,
        scales: np.ndarray,
        length: int,
        *,
        precision: int = 12,
        chunk: int = 8,
        interpolate: bool = False,
    ) -> None:
        self.length = int(length)
        self.chunk = int(chunk)
        self.complex = bool(wavelet.complex_cwt)
        filters, offsets = wavelet_filters(wavelet, scales, precision=precision, interpolate=interpolate)
        # Outputs n + offset (n < length) of a filter of length L alias-free need an FFT of at least
        # length + (L - offset) + 1: about length + L/2, not length + L. Short (high-frequency)
        # filters need barely more than the window, long ones almost twice it: scales are grouped
        # and each group uses its own FFT length (`plan_groups`).
        need = [self.length + len(f) - off + 1 for f, off in zip(filters, offsets)]
        self.groups_: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor | None]] = []
        for members, n_fft in plan_groups(need):
            k = np.arange(n_fft // 2 + 1)
            real_bank = np.empty((len(members), len(k)), dtype=np.complex128)
            imag_bank = np.empty_like(real_bank)
            for row, i in enumerate(members):
                shift = np.exp(2j * np.pi * k * offsets[i] / n_fft)  # advance by the crop offset
                real_bank[row] = np.fft.rfft(np.real(filters[i]), n_fft) * shift
                imag_bank[row] = np.fft.rfft(np.imag(filters[i]), n_fft) * shift
            self.groups_.append(
                (
                    torch.tensor(members, dtype=torch.long),
                    n_fft,
                    torch.from_numpy(real_bank.astype(np.complex64)),
                    torch.from_numpy(imag_bank.astype(np.complex64)) if self.complex else None,
                )
            )
        self.n_scales = len(filters)
        self.fft_length = max(n for _, n, _, _ in self.groups_)

    def _parts(self, x: torch.Tensor):
        """For each scale group of a chunk of windows: (members, real part, imaginary part or None),
        the parts as (B, members, length) views."""
        for members, n_fft, real_bank, imag_bank in self.groups_:
            spec = torch.fft.rfft(x, n=n_fft)[:, None, :]  # (B, 1, F): each window's FFT, once per group
            # Two real inverse FFTs (real and imaginary filter parts) beat one complex FFT of the same length.
            re = torch.fft.irfft(spec * real_bank, n=n_fft)[..., : self.length]
            im = (
                torch.fft.irfft(spec * imag_bank, n=n_fft)[..., : self.length]
                if imag_bank is not None
                else None
            )
            yield members, re, im

    def _check(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(windows, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.length:
            raise ValueError(f"windows must be (N, {self.length}), got {tuple(x.shape)}")
        return x

    def magnitude(self, windows: np.ndarray | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(N, length) -> |CWT| as float32 (N, n_scales, length), into `out` when given.

        A caller that transforms batch after batch (a stream, a service) can pass the same `out`
        every time: writing fresh memory costs page faults that took as long as the FFTs here.
        """
        x = self._check(windows)
        shape = (x.shape[0], self.n_scales, self.length)
        if out is None:
            out = torch.empty(shape, dtype=torch.float32)
        elif tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(
                f"out must be a contiguous float32 tensor of shape {shape}, "
                f"got {tuple(out.shape)} {out.dtype}"
            )
        for start in range(0, x.shape[0], self.chunk):
            rows = out[start : start + self.chunk]
            for members, re, im in self._parts(x[start : start + self.chunk]):
                lo, hi = int(members[0]), int(members[-1]) + 1
                if hi - lo == len(members) and bool(
                    (members == torch.arange(lo, hi)).all()
                ):  # monotonic scales: a slice
                    target = rows[:, lo:hi]
                    torch.hypot(re, im, out=target) if im is not None else torch.abs(re, out=target)
                else:
                    rows.index_copy_(1, members, torch.hypot(re, im) if im is not None else re.abs())
        return out

    def coefficients(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, length) -> the CWT coefficients (N, n_scales, length), complex64 or float32."""
        x = self._check(windows)
        re = torch.empty((x.shape[0], self.n_scales, self.length))
        im = torch.empty_like(re)
        for start in range(0, x.shape[0], self.chunk):
            for members, r, i in self._parts(x[start : start + self.chunk]):
                re[start : start + self.chunk].index_copy_(1, members, r)
                if i is not None:
                    im[start : start + self.chunk].index_copy_(1, members, i)
        return torch.complex(re, im) if self.complex else re


def wavelet_filters(
    wavelet: pywt.ContinuousWavelet, scales: np.ndarray, *, precision: int = 12, interpolate: bool = False
) -> tuple[list[np.ndarray], list[int]]:
    """Per scale, the filter g and the offset o with which ``pywt.cwt`` computes coefficient n as the
    full linear convolution of the window with g at index ``n + o`` (g complex for a complex wavelet).

    `interpolate`: sample the integrated wavelet at exactly k / scale by linear interpolation between
    the points of its grid, where pywt.cwt takes the grid point below. pywt's rounding makes the
    filters of large scales jagged (a tap's error reaches a quarter of its size at scale 64), which
    leaks strong high frequencies into low-frequency rows at about -40 dB; the interpolated filters
    are band-limited, so the magnitude of each scale can be sampled at the image's resolution
    (`signal2image.cwt.CwtImagePlan`); their end taps below `TRIM` of the peak are dropped (the
    offset follows), which changes the coefficients by less than that fraction of the peak.

    Raises:
        ValueError: a scale is too small for the wavelet (pywt.cwt refuses it too).
    """
    int_psi, x = pywt.integrate_wavelet(wavelet, precision=precision)
    int_psi = np.conj(int_psi) if wavelet.complex_cwt else np.asarray(int_psi)
    step = x[1] - x[0]
    filters, offsets = [], []
    for scale in np.asarray(scales, dtype=np.float64):
        # Exactly pywt.cwt's resampling of the integrated wavelet at this scale.
        j = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
        j = j[j < int_psi.size]
        if interpolate:
            at = x[0] + np.arange(len(j)) / scale
            h = (np.interp(at, x, np.real(int_psi)) + 1j * np.interp(at, x, np.imag(int_psi)))[::-1]
            h = h if wavelet.complex_cwt else np.real(h)
        else:
            h = int_psi[j][::-1]
        if len(h) < 2:
            raise ValueError(
                f"scale {scale} is too small for this wavelet (pywt.cwt refuses it too); "
                "raise f_min or lower f_max"
            )
        # diff(x * h) == (x * h')[1:], h' = first difference of h padded with zeros.
        g = np.diff(np.concatenate([[0.0], h, [0.0]])) * -np.sqrt(scale)
        offset = 1 + int(np.floor((len(h) - 2) / 2))  # pywt's centre crop
        if interpolate:  # drop the end taps below TRIM of the peak (cmor1.5-1.0: 10 of 16 units kept)
            keep = np.flatnonzero(np.abs(g) >= TRIM * np.abs(g).max())
            g, offset = g[keep[0] : keep[-1] + 1], offset - int(keep[0])
        filters.append(g)
        offsets.append(offset)
    return filters, offsets


def fast_length(n: int) -> int:
    """The smallest FFT length >= n that is a multiple of 16 with no prime factor above 5.

    Real FFTs of odd or 7/11-smooth lengths ran 1.5-4x slower per sample in PocketFFT (torch's CPU
    FFT) on this project's machine; lengths of this form run at 1.2-1.5 ns per sample.
    """
    m = max(16, -(-int(n) // 16) * 16)
    while True:
        r = m // 16
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 16


def plan_groups(need: list[int]) -> list[tuple[list[int], int]]:
    """Group scales (by index) so that each group shares one FFT length at least its members' need.

    Minimises the modelled cost: per group one forward FFT plus one inverse FFT per member, each
    proportional to n log n. Scales are sorted by need, so a group is a run of that order (dynamic
    programming over the split points).
    """
    order = sorted(range(len(need)), key=lambda i: need[i])
    sizes = [fast_length(need[i]) for i in order]
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of the first j scales
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        n = sizes[j - 1]
        for i in range(j):
            c = best[i] + (j - i + 1) * n * np.log2(n)
            if c < best[j]:
                best[j], cut[j] = c, i
    groups = []
    j = len(order)
    while j > 0:
        groups.append((sorted(order[k] for k in range(cut[j], j)), sizes[j - 1]))
        j = cut[j]
    return groups[::-1]
