"""A signal transform as ONNX operators: raw windows (batch, sensors, samples) -> the network input.

`transform_nodes` writes the graph of a CWT, STFT, grid or GAF transform (window z-score, filter
bank, magnitude, resize, dB, floor, channel mapping, mean/std) with operators ONNX Runtime runs on
CPU and CUDA and TensorRT accepts: Conv and MatMul with precomputed filter banks, elementwise
arithmetic, reductions, Reshape/Slice/Concat/Where. No DFT or STFT operator: ONNX Runtime has no
CUDA kernel for them and its CPU kernel is slow for batched short transforms.

The graph computes what the Python transform computes (`SignalToImage.__call__`): the same filters
(`CwtTransform.image_plan`: the CWT magnitude at the image's resolution, scale group by scale group),
the same resize weights (`signal2image.resize.resize_weights`), the same dB scaling and floor, up to
float32 rounding. The module imports only numpy and onnx; the transform object it reads is built by
the caller.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from signal2image.resize import resize_weights

SIGNAL_INPUT = "signal"
KINDS = ("cwt", "stft", "grid", "gaf")
IR_VERSION = 8  # what torch's exporter writes at opset 17; ONNX Runtime 1.16+ reads it


class GraphBuilder:
    """Nodes and initializers of a subgraph, every name prefixed (no clash with a merged model)."""

    def __init__(self, opset: int, prefix: str = "s2i/") -> None:
        self.opset = int(opset)
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: Any, hint: str = "const", dtype: Any = np.float32) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self._name(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=self._name(op_type), **attrs)
        )
        return output

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: bool = True) -> str:
        """ReduceMax/Min/Mean/Sum over `axes` (axes an input from opset 18, 13 for ReduceSum)."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if as_input:
            return self.op(op_type, x, self.const(axes, "axes", np.int64), keepdims=int(keepdims))
        return self.op(op_type, x, axes=axes, keepdims=int(keepdims))

    def mean(self, x: str, axis: int, n: int) -> str:
        return self.op("Mul", self.reduce("ReduceSum", x, [axis]), self.const(1.0 / n))

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", x, self.const(shape, "shape", np.int64))

    def magnitude(self, y: str, parts: int, rows: int) -> str:
        """(B, parts * rows, T) real (1) or real-then-imaginary (2) rows -> (B, rows, T) magnitude."""
        if parts == 1:
            return self.op("Abs", y)
        sq = self.op("Mul", y, y)
        summed = self.reduce("ReduceSum", self.reshape(sq, [0, 2, rows, -1]), [1], keepdims=False)
        return self.op("Sqrt", summed)


def _zscore(g: GraphBuilder, x: str, length: int) -> str:
    """`signal2image.prepare.zscore` along the last axis: (x - mean) / std, a constant stays 0."""
    centred = g.op("Sub", x, g.mean(x, -1, length))
    std = g.op("Sqrt", g.mean(g.op("Mul", centred, centred), -1, length))
    safe = g.op("Where", g.op("Greater", std, g.const(0.0)), std, g.const(1.0))
    return g.op("Div", centred, safe)


def _unit_range(g: GraphBuilder, x: str, axes: list[int]) -> str:
    """Min-max scaling to [0, 1] over `axes` (a constant input becomes 0), as `grid._unit_range`."""
    lo = g.reduce("ReduceMin", x, axes)
    span = g.op("Sub", g.reduce("ReduceMax", x, axes), lo)
    scaled = g.op("Div", g.op("Sub", x, lo), g.op("Max", span, g.const(1e-12)))
    return g.op("Where", g.op("Greater", span, g.const(0.0)), scaled, g.const(0.0))


def _resize(g: GraphBuilder, x: str, rows: tuple[int, int], cols: tuple[int, int]) -> str:
    """(B, h, w) -> (B, H, W) by the antialiased bilinear resize: R_h @ x @ R_w.T."""
    if rows[0] != rows[1]:
        x = g.op("MatMul", g.const(resize_weights(*rows), "resize_rows"), x)
    if cols[0] != cols[1]:
        x = g.op("MatMul", x, g.const(resize_weights(*cols).T, "resize_cols"))
    return x


def _cwt_magnitude(g: GraphBuilder, t: Any, x: str, length: int) -> str:
    plan = t.image_plan(length)
    x4 = g.reshape(x, [-1, 1, 1, length])  # a 2-D Conv of height 1: ONNX Runtime's faster kernel here
    parts = []
    for group in plan.groups:
        n, k = group.kernel.shape
        weight = np.concatenate([group.kernel.real, group.kernel.imag]) if plan.complex else group.kernel.real
        start = int(group.positions[0])
        pad_begin = -(start + group.d_lo)
        count = len(group.positions)
        pad_end = max(0, (count - 1) * group.stride + k - pad_begin - length)
        y = g.op(
            "Conv",
            x4,
            g.const(weight[:, None, None, :], "cwt_filters"),
            strides=[1, group.stride],
            pads=[0, pad_begin, 0, pad_end],
        )
        produced = (length + pad_begin + pad_end - k) // group.stride + 1
        y = g.reshape(y, [0, weight.shape[0], produced])
        if produced != count:
            y = g.op(
                "Slice",
                y,
                g.const([0], "starts", np.int64),
                g.const([count], "ends", np.int64),
                g.const([2], "axes", np.int64),
            )
        mag = g.magnitude(y, 2 if plan.complex else 1, n)
        parts.append(_pool(g, mag, group.pool, n))
    mag = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)
    if plan.rows is not None:
        mag = g.op("MatMul", g.const(plan.rows, "cwt_rows"), mag)
    return mag


def pool_as_conv(pool: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray] | None:
    """The pooling matrix (T, S) as a strided convolution: (kernel, stride, leading pad, per-column
    scale), when every column holds the same weights shifted by one stride (truncated at the ends and
    renormalised); None otherwise. A (T, S) MatMul touches every position for every column; the
    convolution only the few under each column's triangle."""
    t, s = pool.shape
    if t % s:
        return None
    stride = t // s
    middle = s // 2
    rows = np.flatnonzero(pool[:, middle] > 0)
    if len(rows) == 0:
        return None
    kernel = pool[rows[0] : rows[-1] + 1, middle]
    first = int(rows[0]) - middle * stride  # where column 0's support starts (negative: padding)
    if first > 0:
        return None
    scale = np.empty(s)
    for j in range(s):
        taps = np.arange(len(kernel)) + first + j * stride
        inside = (taps >= 0) & (taps < t)
        expected = np.zeros(t)
        expected[taps[inside]] = kernel[inside]
        total = expected.sum()
        if total <= 0:
            return None
        scale[j] = pool[:, j].sum() / total
        if not np.allclose(pool[:, j], expected * scale[j], rtol=1e-9, atol=1e-12):
            return None
    return kernel, stride, -first, scale


def _pool(g: GraphBuilder, mag: str, pool: np.ndarray, rows: int) -> str:
    """(B, rows, T) @ pool (T, S), as a depthwise strided Conv when the weights allow (`pool_as_conv`)."""
    conv = pool_as_conv(pool)
    if conv is None:
        return g.op("MatMul", mag, g.const(pool, "cwt_pool"))
    kernel, stride, pad_begin, scale = conv
    t, s = pool.shape
    pad_end = max(0, (s - 1) * stride + len(kernel) - pad_begin - t)
    y = g.op(
        "Conv",
        g.reshape(mag, [-1, 1, 1, t]),
        g.const(kernel.reshape(1, 1, 1, -1), "pool_kernel"),
        strides=[1, stride],
        pads=[0, pad_begin, 0, pad_end],
    )
    produced = (t + pad_begin + pad_end - len(kernel)) // stride + 1
    y = g.reshape(y, [-1, rows, produced])
    if produced != s:
        y = g.op(
            "Slice",
            y,
            g.const([0], "starts", np.int64),
            g.const([s], "ends", np.int64),
            g.const([2], "axes", np.int64),
        )
    return g.op("Mul", y, g.const(scale, "pool_scale"))


def _stft_magnitude(g: GraphBuilder, t: Any, x: str, length: int) -> str:
    n = t.nperseg
    if length < n:
        raise ValueError(f"windows of {length} samples are shorter than nperseg={n}")
    bins = n // 2 + 1
    frames = 1 + (length - n) // t.hop
    phase = 2 * np.pi * np.outer(np.arange(bins), np.arange(n)) / n
    window = np.asarray(t.window_, dtype=np.float64)
    weight = np.concatenate([np.cos(phase) * window, -np.sin(phase) * window])  # rfft's real, imaginary
    y = g.op("Conv", g.reshape(x, [-1, 1, length]), g.const(weight[:, None, :], "dft"), strides=[t.hop])
    mag = g.magnitude(y, 2, bins)  # (B, bins, frames)
    return _resize(g, mag, (bins, t.image_size), (frames, t.image_size))


def _grid_image(g: GraphBuilder, t: Any, x: str, length: int) -> str:
    side = math.isqrt(length)
    if side < 2:
        raise ValueError(f"windows of {length} samples are too short for a grid")
    head = g.op(
        "Slice",
        x,
        g.const([0], "starts", np.int64),
        g.const([side * side], "ends", np.int64),
        g.const([1], "axes", np.int64),
    )
    grid = _unit_range(g, g.reshape(head, [-1, side, side]), [1, 2])
    sized = _resize(g, grid, (side, t.image_size), (side, t.image_size))
    return g.op("Clip", sized, g.const(0.0), g.const(1.0))


def paa_weights(length: int, n: int) -> np.ndarray:
    """(length, n): `F.adaptive_avg_pool1d`'s averaging, segment i = [floor(i L / n), ceil((i+1) L / n))."""
    out = np.zeros((length, n), dtype=np.float64)
    for i in range(n):
        lo, hi = (i * length) // n, -((-(i + 1) * length) // n)
        out[lo:hi, i] = 1.0 / (hi - lo)
    return out


def _gaf_image(g: GraphBuilder, t: Any, x: str, length: int) -> str:
    n = t.image_size
    if length < n:
        raise ValueError(f"windows of {length} samples are shorter than image_size={n}")
    paa = g.op("MatMul", x, g.const(paa_weights(length, n), "paa"))  # (B, n)
    two = g.op("Sub", g.op("Mul", _unit_range(g, paa, [1]), g.const(2.0)), g.const(1.0))
    scaled = g.op("Clip", two, g.const(-1.0), g.const(1.0))
    sine = g.op("Sqrt", g.op("Max", g.op("Sub", g.const(1.0), g.op("Mul", scaled, scaled)), g.const(0.0)))

    def outer(v: str) -> str:
        return g.op("Mul", g.reshape(v, [-1, n, 1]), g.reshape(v, [-1, 1, n]))

    gasf = g.op("Sub", outer(scaled), outer(sine))
    return g.op("Mul", g.op("Add", gasf, g.const(1.0)), g.const(0.5))


def _db_image(g: GraphBuilder, t: Any, mag: str) -> str:
    """(B, S, S) magnitude -> [0, 1]: dB relative to the peak (or the fitted level), floored."""
    db = g.op("Mul", g.op("Log", g.op("Max", mag, g.const(1e-12))), g.const(20.0 / math.log(10.0)))
    ref = g.reduce("ReduceMax", db, [1, 2]) if t.level_db is None else g.const(t.level_db)
    floored = g.op("Clip", g.op("Sub", db, ref), g.const(t.floor_db), g.const(0.0))
    return g.op("Div", g.op("Sub", floored, g.const(t.floor_db)), g.const(-t.floor_db))


def transform_nodes(g: GraphBuilder, transform: Any, x: str, *, length: int, sensors: int, out: str) -> str:
    """Add the graph of `transform` from `x` (batch, sensors, length) to `out` (batch, C, S, S).

    Raises:
        ValueError: a kind or setting the graph cannot express (a CWT with ``sampling: full``, three
            sensors into one channel, windows too short).
    """
    kind = getattr(transform, "kind", "")
    if kind not in KINDS:
        raise ValueError(f"no ONNX graph for transform kind {kind!r}; kinds with one: {list(KINDS)}")
    if kind == "cwt" and transform.sampling != "output":
        raise ValueError(
            "a CWT with sampling 'full' (exported before the raw-signal model) has no graph; "
            "retrain with the current transform (sampling 'output')"
        )
    channels, s = int(transform.channels), int(transform.image_size)
    if not 1 <= sensors <= 3 or (channels == 1 and sensors != 1):
        raise ValueError(f"{sensors} sensor(s) cannot feed a {channels}-channel image")
    if transform.signal_norm == "window":
        x = _zscore(g, x, length)
    flat = g.reshape(x, [-1, length])
    if kind == "cwt":
        grey = _db_image(g, transform, _cwt_magnitude(g, transform, flat, length))
    elif kind == "stft":
        grey = _db_image(g, transform, _stft_magnitude(g, transform, flat, length))
    elif kind == "grid":
        grey = _grid_image(g, transform, flat, length)
    else:
        grey = _gaf_image(g, transform, flat, length)
    grey = g.reshape(grey, [-1, sensors, s, s])
    if sensors != channels:
        extra = grey if sensors == 1 else g.mean(grey, 1, sensors)
        grey = g.op("Concat", *([grey] * 3 if sensors == 1 else [grey, extra]), axis=1)
    mean = g.const(np.asarray(transform.mean).reshape(1, channels, 1, 1), "mean")
    std = g.const(np.asarray(transform.std).reshape(1, channels, 1, 1), "std")
    return g.op("Div", g.op("Sub", grey, mean), std, out=out)


def transform_model(transform: Any, *, length: int, sensors: int = 1, opset: int = 17) -> onnx.ModelProto:
    """The transform alone: input ``signal`` (batch, sensors, length) -> output ``image`` (batch, C, S, S)."""
    g = GraphBuilder(opset)
    transform_nodes(g, transform, SIGNAL_INPUT, length=length, sensors=sensors, out="image")
    s, c = int(transform.image_size), int(transform.channels)
    graph = helper.make_graph(
        g.nodes,
        f"{transform.kind}_transform",
        [helper.make_tensor_value_info(SIGNAL_INPUT, TensorProto.FLOAT, ["batch", sensors, length])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", c, s, s])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model
