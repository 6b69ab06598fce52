"""The raw-signal model: one ONNX file from the raw window to the verdict.

`build_signal_model` puts the transform's graph (`signal2image.onnx_graph`: filter banks as Conv
and MatMul, dB, resize, channel normalisation) in front of an exported image-input model: input
``signal`` float32 ``[batch, channels, samples]``, outputs ``logits``, ``features`` (when the image
model has them, for the drift watch) and ``profile`` (the network input's mean over channels and
columns, from which the drift watch takes its band energies). Its metadata is the image model's
with ``input_kind: signal`` (`ModelMetadata.as_signal_input`). It is written beside the image model
as ``<stem>.signal.onnx`` (`signal_model_path`); the service loads it instead of the image model when
it is there, and then needs neither torch nor the Python transform for signal requests.

The module imports numpy, onnx and the torch-free parts of signal2image only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploy.errors import ExportError
from deploy.metadata import FEATURES_OUTPUT, PROFILE_OUTPUT, ModelMetadata
from signal2image.onnx_graph import SIGNAL_INPUT, GraphBuilder, transform_nodes

SIGNAL_SUFFIX = ".signal.onnx"
IMAGE_INPUT = "input"  # the image model's input (deploy.onnx_export.INPUT_NAME)


def signal_model_path(path: str | Path) -> Path:
    """Where the raw-signal model of the image model at `path` is (``model.onnx`` -> ``model.signal.onnx``;
    in a registered MLflow model, its ``extra_files`` folder)."""
    path = Path(path)
    beside = path.with_name(path.stem + SIGNAL_SUFFIX)
    if beside.is_file():
        return beside
    extra = path.parent / "extra_files" / beside.name
    return extra if extra.is_file() else beside


def image_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset of `model`."""
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def build_signal_model(image_model: onnx.ModelProto, transform: Any) -> onnx.ModelProto:
    """The raw-signal model of `image_model` (an export of `deploy.onnx_export`, with metadata).

    Args:
        transform: the model's transform (`signal2image.from_dict` of its metadata).

    Raises:
        ExportError: an image model, or a transform the graph cannot express.
    """
    meta = ModelMetadata.from_onnx(image_model)
    if meta.is_image or meta.takes_signal or meta.window_length is None:
        raise ExportError("a raw-signal model is built from the image-input model of a signal model")
    length, sensors = int(meta.window_length), len(meta.channels)
    inputs = [i.name for i in image_model.graph.input]
    if inputs != [IMAGE_INPUT]:
        raise ExportError(f"the image model's inputs are {inputs}, expected [{IMAGE_INPUT!r}]")
    g = GraphBuilder(image_opset(image_model))
    try:
        transform_nodes(g, transform, SIGNAL_INPUT, length=length, sensors=sensors, out=IMAGE_INPUT)
    except ValueError as exc:
        raise ExportError(f"no raw-signal model: {exc}") from None
    _, channels, size, _ = meta.image_shape
    profile = g.op(
        "Mul",
        g.reduce("ReduceSum", IMAGE_INPUT, [1, 3], keepdims=False),
        g.const(1.0 / (channels * size)),
        out=PROFILE_OUTPUT,
    )
    graph = onnx.GraphProto()
    graph.CopyFrom(image_model.graph)
    graph.name = f"{graph.name}_from_signal"
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(SIGNAL_INPUT, TensorProto.FLOAT, ["batch", sensors, length])
    )
    nodes = list(g.nodes) + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(g.initializers)
    graph.output.append(helper.make_tensor_value_info(profile, TensorProto.FLOAT, ["batch", size]))
    model = helper.make_model(graph, opset_imports=list(image_model.opset_import))
    model.ir_version = image_model.ir_version
    model.producer_name = image_model.producer_name
    meta.as_signal_input().write_into(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"ONNX checker rejected the raw-signal model: {exc}") from None
    return model


@dataclass(frozen=True)
class SignalParity:
    """The raw-signal model against the Python transform followed by the image model, on real windows.

    Attributes:
        max_abs_diff: largest |logit difference|.
        logit_scale: largest |logit| of the image model (the tolerance scales with it).
        agreement: fraction of windows with the same predicted class.
        n_windows: windows compared.
    """

    max_abs_diff: float
    logit_scale: float
    agreement: float
    n_windows: int

    def __str__(self) -> str:
        return (
            f"raw-signal model vs Python transform + image model: max |logit diff| {self.max_abs_diff:.2e} "
            f"(logits up to {self.logit_scale:.1f}), same class on {100 * self.agreement:.1f} % of "
            f"{self.n_windows} windows"
        )


def compare_signal_model(
    signal_session: Any, image_session: Any, windows: np.ndarray, images: np.ndarray, *, batch: int = 64
) -> SignalParity:
    """`SignalParity` of two ONNX Runtime sessions: the raw-signal model on `windows` (N, C, L), the
    image model on `images` (N, C, S, S), the Python transform's output for the same windows."""
    raw, ref = [], []
    for i in range(0, len(windows), batch):
        raw.append(
            signal_session.run(["logits"], {SIGNAL_INPUT: np.ascontiguousarray(windows[i : i + batch])})[0]
        )
        ref.append(
            image_session.run(["logits"], {IMAGE_INPUT: np.ascontiguousarray(images[i : i + batch])})[0]
        )
    got, want = np.concatenate(raw), np.concatenate(ref)
    return SignalParity(
        max_abs_diff=float(np.abs(got - want).max()) if got.size else 0.0,
        logit_scale=float(np.abs(want).max()) if want.size else 0.0,
        agreement=float(np.mean(got.argmax(1) == want.argmax(1))) if len(got) else 1.0,
        n_windows=int(len(got)),
    )


def export_signal_model(
    image_path: Path,
    transform: Any,
    windows: np.ndarray,
    images: np.ndarray,
    *,
    tolerance: float = 1e-4,
    path: Path | None = None,
) -> tuple[Path, SignalParity]:
    """Write the raw-signal model of the image model at `image_path` beside it and check it on real
    `windows` (N, C, L) against the image model on `images`, their Python transform.

    Raises:
        ExportError: the graph cannot express the transform, or the logits differ by more than
            `tolerance` (times the largest logit beyond 1), or a window gets another class.
    """
    from deploy.inferencer import create_session

    dst = path or image_path.with_name(image_path.stem + SIGNAL_SUFFIX)
    model = build_signal_model(onnx.load(str(image_path)), transform)
    onnx.save(model, str(dst))
    cpu = ["CPUExecutionProvider"]
    parity = compare_signal_model(
        create_session(dst, providers=cpu),
        create_session(image_path, providers=cpu),
        np.asarray(windows, dtype=np.float32),
        np.asarray(images, dtype=np.float32),
    )
    if parity.max_abs_diff > tolerance * max(1.0, parity.logit_scale) or parity.agreement < 1.0:
        dst.unlink(missing_ok=True)
        raise ExportError(f"{dst}: {parity}; the raw-signal model is not faithful (removed)")
    return dst, parity


__all__ = [
    "FEATURES_OUTPUT",
    "PROFILE_OUTPUT",
    "SIGNAL_SUFFIX",
    "SignalParity",
    "build_signal_model",
    "compare_signal_model",
    "export_signal_model",
    "signal_model_path",
]
