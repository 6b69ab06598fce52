"""Continuous wavelet transform scalogram: PyWavelets' wavelets and scales, computed by a batched
FFT filter bank that reproduces `pywt.cwt` (see `signal2image.filterbank`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pywt
import torch

from signal2image.base import SignalToImage
from signal2image.filterbank import CwtFilterBank, wavelet_filters
from signal2image.prepare import nyquist_problem
from signal2image.resize import resize_weights

MAX_GROUP = 8  # scales per group of one stride (their kernels share the longest one's length)
SAMPLINGS = ("output", "full")


def continuous_wavelet(name: str) -> pywt.ContinuousWavelet:
    """The PyWavelets continuous wavelet `name`; ValueError listing the valid names otherwise."""
    try:
        return pywt.ContinuousWavelet(name)
    except ValueError:
        raise ValueError(
            f"{name!r} is not a continuous wavelet; use one of {pywt.wavelist(kind='continuous')} "
            "(complex Morlet with parameters: 'cmor1.5-1.0')"
        ) from None


@dataclass(frozen=True)
class ScaleGroup:
    """Consecutive scales whose magnitude is sampled with one stride (see `CwtImagePlan`).

    Attributes:
        lo, hi: the scales ``lo .. hi - 1`` (indices into the transform's scales).
        stride: samples between the positions at which the magnitude is computed.
        positions: (T,) those sample positions, ``start + t * stride``.
        d_lo: the first tap's offset: coefficient n is ``sum_k kernel[:, k] * x[n + d_lo + k]``.
        kernel: (hi - lo, K) real or complex correlation kernels (zero where a scale is shorter).
        pool: (T, image_size) the weights that pool the sampled magnitude into the image's columns.
    """

    lo: int
    hi: int
    stride: int
    positions: np.ndarray
    d_lo: int
    kernel: np.ndarray
    pool: np.ndarray


@dataclass(frozen=True)
class CwtImagePlan:
    """How the CWT image is computed at the image's resolution, for windows of one length.

    Each scale's coefficients are band-limited, so the magnitude, whose bandwidth is the band's
    width, is computed only every `ScaleGroup.stride` samples (a power of two, at most half the
    image's column spacing; 1 for the widest bands) and pooled into the image's columns with the
    triangle weights of the antialiased bilinear resize, renormalised over the sampled positions.
    The Python transform and the ONNX graph (`signal2image.onnx_graph`) both follow this plan.

    Attributes:
        groups: the scale groups, in scale order.
        rows: (image_size, n_scales) the resize along the frequency axis (None: n_scales == image_size).
        complex: the wavelet is complex (magnitude of real and imaginary parts).
    """

    groups: tuple[ScaleGroup, ...]
    rows: np.ndarray | None
    complex: bool

    @property
    def multiply_adds(self) -> int:
        """Real multiply-adds per window of the filtering (the plan's cost; the pooling is small)."""
        parts = 2 if self.complex else 1
        return sum(g.kernel.size * len(g.positions) * parts for g in self.groups)


def band_width(wavelet: pywt.ContinuousWavelet, tail: float = 1e-4) -> float:
    """Width of the mother wavelet's band (cycles per unit of its time axis) holding all but `tail`
    of its energy, which bounds the bandwidth of the magnitude of its coefficients (a complex
    wavelet; a real one: twice the band's upper edge, the magnitude's oscillation)."""
    psi, x = wavelet.wavefun(level=14)
    step = float(x[1] - x[0])
    n_fft = 1 << 18
    power = np.fft.fftshift(np.abs(np.fft.fft(psi, n_fft)) ** 2)
    freqs = np.fft.fftshift(np.fft.fftfreq(n_fft, d=step))
    if not wavelet.complex_cwt:  # a real wavelet's spectrum is symmetric: one side, |f|
        power, freqs = power[freqs >= 0], freqs[freqs >= 0]
    share = np.cumsum(power) / power.sum()
    low = float(freqs[min(int(np.searchsorted(share, tail / 2)), len(freqs) - 1)])
    high = float(freqs[min(int(np.searchsorted(share, 1 - tail / 2)), len(freqs) - 1)])
    return high - low if wavelet.complex_cwt else 2.0 * high


def magnitude_stride(width: float, scale: float, cap: int) -> int:
    """The largest power of two <= `cap` samples at which the magnitude of a scale's coefficients
    may be sampled: at most half the period of its highest frequency (`band_width` / scale)."""
    stride = 1
    while stride * 2 <= cap and stride * 2 <= scale / (2.0 * width):
        stride *= 2
    return stride


def plan_cwt_image(
    wavelet: pywt.ContinuousWavelet, scales: np.ndarray, length: int, image_size: int
) -> CwtImagePlan:
    """The `CwtImagePlan` of `wavelet` at `scales` for windows of `length` samples."""
    filters, offsets = wavelet_filters(wavelet, scales, interpolate=True)
    step = length / image_size
    cap = 1
    while cap * 2 <= step / 2:
        cap *= 2
    width = band_width(wavelet)
    strides = [magnitude_stride(width, float(s), cap) for s in scales]
    full_pool = resize_weights(length, image_size).T  # (length, S)
    groups = []
    lo = 0
    while lo < len(filters):
        hi = lo + 1
        while hi < len(filters) and hi - lo < MAX_GROUP and strides[hi] == strides[lo]:
            hi += 1
        stride = strides[lo]
        start = (stride - 1) // 2
        positions = np.arange(start, length, stride)
        d_lo = min(min(offsets[i] - len(filters[i]) + 1 for i in range(lo, hi)), -start)
        d_hi = max(offsets[i] for i in range(lo, hi))
        kernel = np.zeros((hi - lo, d_hi - d_lo + 1), dtype=filters[lo].dtype)
        for row, i in enumerate(range(lo, hi)):
            taps = filters[i][::-1]  # correlation kernel: tap d holds g[offset - d]
            first = offsets[i] - len(filters[i]) + 1 - d_lo
            kernel[row, first : first + len(taps)] = taps
        pool = full_pool[positions]
        pool = pool / pool.sum(axis=0, keepdims=True)
        groups.append(ScaleGroup(lo, hi, stride, positions, d_lo, kernel, pool))
        lo = hi
    n = len(filters)
    rows = None if n == image_size else resize_weights(n, image_size)
    return CwtImagePlan(tuple(groups), rows, bool(wavelet.complex_cwt))


class CwtTransform(SignalToImage):
    """|CWT| on log-spaced frequencies from `f_min` to `f_max` Hz.

    Args:
        wavelet: any continuous wavelet PyWavelets knows (``cmor1.5-1.0``, ``morl``, ``mexh`` ...).
        f_min, f_max: analysed frequency range in Hz (f_max at most fs/2).
        n_scales: number of scales (rows before resizing).
        sampling: ``output`` (the default): each scale's magnitude is computed at the image's time
            resolution (`CwtImagePlan`), as the exported raw-signal ONNX model computes it;
            ``full``: at every sample, then resized (models exported before the raw-signal model;
            a description without the key is rebuilt so by `signal2image.from_dict`).
        **kwargs: see `SignalToImage`.
    """

    kind = "cwt"

    def __init__(
        self,
        *,
        wavelet: str = "cmor1.5-1.0",
        f_min: float = 50.0,
        f_max: float = 5000.0,
        n_scales: int = 64,
        sampling: str = "output",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        self.sampling = sampling
        self._wavelet = continuous_wavelet(wavelet)
        problem = nyquist_problem(f_max, self.fs, "f_max")
        if problem or not 0 < f_min < f_max:
            raise ValueError(problem or f"need 0 < f_min < f_max, got f_min={f_min}, f_max={f_max}")
        self.wavelet = wavelet
        self.f_min = float(f_min)
        self.f_max = float(f_max)
        self.n_scales = int(n_scales)
        # Computed once per transform, not per call.
        self.frequencies_ = np.geomspace(self.f_min, self.f_max, self.n_scales)
        self.scales_ = pywt.frequency2scale(self._wavelet, self.frequencies_ / self.fs)
        self.banks_: dict[int, CwtFilterBank] = {}
        self.plans_: dict[int, CwtImagePlan] = {}

    def _settings(self) -> dict[str, Any]:
        return {
            "wavelet": self.wavelet,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "n_scales": self.n_scales,
            "sampling": self.sampling,
        }

    def frequencies(self, n_samples: int) -> np.ndarray:
        """The `n_scales` log-spaced frequencies from `f_min` to `f_max` Hz (whatever `n_samples`)."""
        return self.frequencies_

    def filter_bank(self, length: int) -> CwtFilterBank:
        """The frequency-domain filters for windows of `length` samples, built once per length."""
        if length not in self.banks_:
            self.banks_[length] = CwtFilterBank(
                self._wavelet, self.scales_, length, interpolate=self.sampling == "output"
            )
        return self.banks_[length]

    def magnitude(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> |CWT| (N, scales, L) at every sample, by the batched filter bank: as `pywt.cwt`
        computes it (within 1e-6 of its peak) for ``sampling: full``; with the band-limited filters
        (`signal2image.filterbank.wavelet_filters`, ``interpolate``) for ``sampling: output``."""
        windows = np.asarray(windows, dtype=np.float32)
        return self.filter_bank(windows.shape[-1]).magnitude(windows)  # (N, scales, L)

    def image_plan(self, length: int) -> CwtImagePlan:
        """How the image of windows of `length` samples is computed (``sampling: output``), built once."""
        if length not in self.plans_:
            self.plans_[length] = plan_cwt_image(self._wavelet, self.scales_, length, self.image_size)
        return self.plans_[length]

    def image_magnitude(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, S, S): the magnitude at the image's resolution (`sampling`)."""
        if self.sampling == "full":
            return super().image_magnitude(windows)
        windows = np.asarray(windows, dtype=np.float32)
        plan = self.image_plan(windows.shape[-1])
        full = self.magnitude(windows)  # (N, scales, L): pywt.cwt's magnitude at every sample
        parts = [
            full[:, g.lo : g.hi][:, :, torch.from_numpy(g.positions)]
            @ torch.from_numpy(g.pool.astype(np.float32))
            for g in plan.groups
        ]
        mag = torch.cat(parts, dim=1)  # (N, scales, S)
        if plan.rows is not None:
            mag = torch.from_numpy(plan.rows.astype(np.float32)) @ mag
        return mag
