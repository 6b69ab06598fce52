"""Deployment variants of an exported model: INT8 (static quantisation calibrated on training
inputs), FP16 (for GPUs), each checked on the test set against the FP32 model, and a Triton
Inference Server model repository."""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deploy.errors import ExportError
from deploy.metadata import FEATURES_OUTPUT, PROFILE_OUTPUT, MetadataError, ModelMetadata
from deploy.onnx_export import INPUT_NAME, OUTPUT_NAME
from deploy.signal_model import signal_model_path

VARIANTS = ("int8", "fp16")


@dataclass(frozen=True)
class VariantReport:
    """A variant against its FP32 model on the same test inputs."""

    kind: str
    path: Path
    accuracy: float
    reference_accuracy: float
    agreement: float  # fraction of test inputs with the same predicted class as FP32
    speedup_batch1: float  # FP32 time / variant time, median of interleaved rounds
    speedup_batch32: float
    tolerance_points: float
    correct: int = 0  # test inputs the variant classifies correctly (the registry compares counts)
    total: int = 0

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.reference_accuracy - self.accuracy)

    @property
    def accepted(self) -> bool:
        return self.drop_points <= self.tolerance_points

    def __str__(self) -> str:
        verdict = (
            "accepted" if self.accepted else f"REFUSED (loses more than {self.tolerance_points:g} points)"
        )
        return (
            f"{self.kind}: test accuracy {self.accuracy:.4f} vs FP32 {self.reference_accuracy:.4f} "
            f"({0.0 - self.drop_points + 0.0:+.2f} points), same class as FP32 on {100 * self.agreement:.1f} "
            "% of inputs, "
            f"speed-up on this CPU {self.speedup_batch1:.2f}x at batch 1, {self.speedup_batch32:.2f}x at "
            f"batch 32: {verdict}"
        )


def _with_metadata(src: onnx.ModelProto, dst: Path, kind: str, calibration_inputs: int | None = None) -> None:
    """Copy the FP32 model's metadata (classes, transform, ...) into the variant and mark it."""
    model = onnx.load(str(dst))
    ModelMetadata.from_onnx(src).with_variant(kind, calibration_inputs).write_into(model)
    onnx.save(model, str(dst))


def make_int8(src: Path, dst: Path, calibration: np.ndarray, *, batch: int = 16) -> Path:
    """Static QDQ quantisation, per-channel weights, activations calibrated on `calibration`
    (real training inputs of the network, (N, C, H, W))."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [
                    {INPUT_NAME: np.ascontiguousarray(calibration[i : i + batch], dtype=np.float32)}
                    for i in range(0, len(calibration), batch)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    _with_metadata(onnx.load(str(src)), dst, "int8", int(len(calibration)))
    return dst


def make_fp16(src: Path, dst: Path) -> Path:
    """Weights and arithmetic in float16, inputs and outputs kept float32 (for GPUs; CPUs emulate it)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_nodes(model.graph)  # the converter appends the input casts at the end; the checker wants order
    onnx.save(model, str(dst))
    _with_metadata(onnx.load(str(src)), dst, "fp16")
    return dst


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` topologically (stable: nodes keep their order where they may)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError(f"the graph has a cycle or a missing input among {[n.name for n in rest[:5]]}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _session(path: Path, threads: int) -> Any:
    from deploy.inferencer import create_session

    return create_session(path, providers=["CPUExecutionProvider"], threads=threads)


def _predict(session: Any, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [
        session.run([OUTPUT_NAME], {INPUT_NAME: inputs[i : i + batch]})[0]
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(out).argmax(1)


def _speedup(reference: Any, candidate: Any, inputs: np.ndarray, batch: int, rounds: int) -> float:
    x = np.ascontiguousarray(inputs[:batch])
    ratios = []
    for _ in range(rounds):  # interleaved: the machine's noise hits both alike
        times = []
        for session in (reference, candidate):
            start = time.perf_counter()
            for _ in range(max(1, 32 // batch)):
                session.run([OUTPUT_NAME], {INPUT_NAME: x})
            times.append(time.perf_counter() - start)
        ratios.append(times[0] / times[1])
    return float(statistics.median(ratios))


def evaluate_variant(
    kind: str,
    reference: Path,
    candidate: Path,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    tolerance_points: float,
    rounds: int = 5,
    threads: int = 1,
) -> VariantReport:
    """Accuracy of both models on the test inputs, prediction agreement, and interleaved speed."""
    ref, cand = _session(reference, threads), _session(candidate, threads)
    x = np.ascontiguousarray(inputs, dtype=np.float32)
    p_ref, p_cand = _predict(ref, x), _predict(cand, x)
    return VariantReport(
        kind=kind,
        path=candidate,
        accuracy=float(np.mean(p_cand == labels)),
        reference_accuracy=float(np.mean(p_ref == labels)),
        agreement=float(np.mean(p_cand == p_ref)),
        speedup_batch1=_speedup(ref, cand, x, 1, rounds),
        speedup_batch32=_speedup(ref, cand, x, min(32, len(x)), rounds),
        tolerance_points=tolerance_points,
        correct=int(np.sum(p_cand == labels)),
        total=int(len(labels)),
    )


def refresh_reference(path: Path, reference_inputs: np.ndarray) -> bool:
    """Recompute the drift reference's features with the model at `path` itself (an INT8 or FP16
    variant's features differ a little from the FP32 model's it was copied from): the same seeded
    sample of the same training inputs the FP32 reference was built from. False when the model has
    no drift reference or no ``features`` output, or the inputs are not the reference's."""
    import dataclasses

    from deploy.drift import reference_pick, session_features

    meta = ModelMetadata.from_onnx(path)
    reference = meta.drift
    if reference is None or len(reference_inputs) != reference.n_summarised:
        return False
    session = _session(path, threads=0)
    if FEATURES_OUTPUT not in [o.name for o in session.get_outputs()]:
        return False
    pick = reference_pick(len(reference_inputs), reference.size, reference.seed)
    features = session_features(session, reference_inputs[pick])
    model = onnx.load(str(path))
    meta.with_drift(dataclasses.replace(reference, features=features)).write_into(model)
    onnx.save(model, str(path))
    return True


def build_variants(
    onnx_path: Path,
    kinds: list[str],
    *,
    calibration: np.ndarray,
    test_inputs: np.ndarray,
    test_labels: np.ndarray,
    tolerance_points: float,
    echo: Any = print,
    reference_inputs: np.ndarray | None = None,
) -> list[VariantReport]:
    """Write `model.<kind>.onnx` next to `onnx_path` for each kind and check it on the test set.

    Args:
        reference_inputs: the training inputs the FP32 model's drift reference summarised: each
            variant's reference features are recomputed with the variant (`refresh_reference`);
            without them a variant keeps the FP32 model's.
    """
    reports = []
    for kind in kinds:
        if kind not in VARIANTS:
            raise ExportError(f"unknown variant {kind!r}; choose from {list(VARIANTS)}")
        dst = onnx_path.with_name(f"{onnx_path.stem}.{kind}.onnx")
        start = time.perf_counter()
        make_int8(onnx_path, dst, calibration) if kind == "int8" else make_fp16(onnx_path, dst)
        try:
            onnx.checker.check_model(str(dst), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"ONNX checker rejected the {kind} variant {dst}: {exc}") from None
        if reference_inputs is not None and refresh_reference(dst, reference_inputs):
            echo(f"  {kind}: drift reference features recomputed with the {kind} model")
        report = evaluate_variant(
            kind, onnx_path, dst, test_inputs, test_labels, tolerance_points=tolerance_points
        )
        echo(f"  {report} ({time.perf_counter() - start:.1f} s)")
        reports.append(report)
    return reports


def triton_config(
    name: str,
    input_shape: list[int],
    n_classes: int,
    *,
    max_batch: int = 64,
    gpu: bool = True,
    features: int | None = None,
    input_name: str = INPUT_NAME,
    profile: int | None = None,
) -> str:
    """A Triton `config.pbtxt` for this project's ONNX models (dynamic batch axis first); `features`:
    the width of the output ``features`` of a model exported with a drift reference; `input_name`:
    ``signal`` for a raw-signal model (`input_shape` then [channels, samples]), whose ``profile``
    output has `profile` values."""
    dims = ", ".join(str(d) for d in input_shape)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    second = "".join(
        f""",
  {{
    name: "{name}"
    data_type: TYPE_FP32
    dims: [ {width} ]
  }}"""
        for name, width in ((FEATURES_OUTPUT, features), (PROFILE_OUTPUT, profile))
        if width is not None
    )
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{
    name: "{input_name}"
    data_type: TYPE_FP32
    dims: [ {dims} ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {n_classes} ]
    label_filename: "labels.txt"
  }}{second}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(b) for b in sorted({min(8, max_batch), min(32, max_batch)}))} ]
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: 1
    kind: {kind}
  }}
]
"""


def write_triton_repository(
    onnx_path: Path,
    repository: Path,
    *,
    name: str,
    version: int = 1,
    max_batch: int = 64,
    gpu: bool = True,
    prefer_signal_model: bool = True,
) -> Path:
    """`repository/<name>/config.pbtxt`, `labels.txt`, `<version>/model.onnx` and the model's
    metadata as `metadata.json`. A signal model's raw-signal model beside `onnx_path`
    (`deploy.signal_model.signal_model_path`) is the one written when there is one: Triton then takes
    raw windows (input ``signal``, dims [channels, samples]); otherwise `metadata.json` describes the
    transform the client must apply before sending network inputs."""
    raw = signal_model_path(onnx_path)
    source = raw if prefer_signal_model and raw.is_file() else onnx_path
    model = onnx.load(str(source))
    try:
        meta = ModelMetadata.from_onnx(model)
    except MetadataError as exc:
        raise ExportError(f"{source}: {exc}") from None
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    if not dims or any(d <= 0 for d in dims):
        raise ExportError(f"{source}: the input needs fixed sizes after the batch axis, got {dims}")
    classes = list(meta.classes)
    widths: dict[str, int] = {}
    for output in model.graph.output[1:]:
        if output.name in (FEATURES_OUTPUT, PROFILE_OUTPUT):
            width = [d.dim_value for d in output.type.tensor_type.shape.dim][1:]
            if len(width) != 1 or width[0] <= 0:
                raise ExportError(f"{source}: the {output.name!r} output needs a fixed width, got {width}")
            widths[output.name] = width[0]
    folder = repository / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / str(version) / "model.onnx")
    (folder / "config.pbtxt").write_text(
        triton_config(
            name,
            dims,
            len(classes),
            max_batch=max_batch,
            gpu=gpu,
            features=widths.get(FEATURES_OUTPUT),
            input_name=model.graph.input[0].name,
            profile=widths.get(PROFILE_OUTPUT),
        )
    )
    (folder / "labels.txt").write_text("\n".join(classes) + "\n")
    (folder / "metadata.json").write_text(json.dumps(meta.to_json(), indent=2))
    return folder
