"""Signal images without a frequency axis: reshape-to-grid (Wen et al. 2018) and the Gramian angular field."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from signal2image.base import SignalToImage


def _unit_range(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max scaling to [0, 1] over `dims` (a constant input becomes 0)."""
    lo = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), torch.zeros_like(x))


class GridTransform(SignalToImage):
    """Reshape-to-grid: the first side² samples of a window, row after row, as a side x side image
    (side = floor(sqrt(window length))), min-max scaled per window, then resized to `image_size`.
    Wen et al., "A new convolutional neural network-based data-driven fault diagnosis method",
    IEEE Trans. Industrial Electronics 65(7), 2018."""

    kind = "grid"
    has_frequency_axis = False

    def grid(self, windows: np.ndarray) -> torch.Tensor:
        """(N, L) -> (N, side, side) in [0, 1], before resizing."""
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        side = math.isqrt(x.shape[-1])
        if side < 2:
            raise ValueError(f"windows of {x.shape[-1]} samples are too short for a grid")
        return _unit_range(x[:, : side * side].reshape(-1, side, side), (1, 2))

    def _to_unit_image(self, windows: np.ndarray) -> torch.Tensor:
        g = self.grid(windows)[:, None]
        return F.interpolate(
            g, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
        )[:, 0].clamp(0, 1)


class GafTransform(SignalToImage):
    """Gramian angular summation field: the window averaged into `image_size` segments (PAA),
    scaled to [-1, 1], phi = arccos(x), image cos(phi_i + phi_j) mapped to [0, 1].
    Wang and Oates, "Imaging time-series to improve classification and imputation", IJCAI 2015."""

    kind = "gaf"
    has_frequency_axis = False

    def _to_unit_image(self, windows: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        n = self.image_size
        if x.shape[-1] < n:
            raise ValueError(f"windows of {x.shape[-1]} samples are shorter than image_size={n}")
        paa = F.adaptive_avg_pool1d(x[:, None], n)[:, 0]  # (N, n)
        scaled = (_unit_range(paa, (1,)) * 2 - 1).clamp(-1, 1)
        sine = torch.sqrt((1 - scaled**2).clamp_min(0))
        gasf = scaled[:, :, None] * scaled[:, None, :] - sine[:, :, None] * sine[:, None, :]
        return (gasf + 1) / 2
