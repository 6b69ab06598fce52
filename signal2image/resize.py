"""The resampling weights of the transforms' resize as matrices (numpy only).

`resize_weights(n_in, n_out)` is the (n_out, n_in) matrix of PyTorch's
``F.interpolate(..., mode="bilinear", antialias=True, align_corners=False)`` along one axis (ATen's
``_compute_indices_min_size_weights_aa``): a triangle filter as wide as the scale when shrinking,
plain bilinear interpolation when enlarging, weights normalised to sum 1. The resize of a
(H, W) map to (h, w) is ``R_h @ map @ R_w.T``; the ONNX graph of a transform
(`signal2image.onnx_graph`) applies it as two MatMuls.
"""

from __future__ import annotations

import numpy as np


def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64: row i holds the weights of input samples for output sample i."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    out = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as ATen's cast does
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((j - center + 0.5) * invscale), 0.0, None)
        total = w.sum()
        out[i, lo:hi] = w / total if total > 0 else 0.0
    return out
