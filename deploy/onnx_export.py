"""Export a trained classifier to ONNX, embed its metadata, and prove ONNX Runtime reproduces it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from deploy.errors import ExportError
from deploy.metadata import ModelMetadata

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduced PyTorch on the check inputs of `export_onnx`.

    Attributes:
        max_abs_diff: largest |logit difference| over all inputs and classes.
        logit_scale: largest |logit| PyTorch produced (what `allowed` scales the tolerance by).
        n_inputs: how many inputs were compared.
        same_predictions: every input got the same class from both.
    """

    max_abs_diff: float
    logit_scale: float
    n_inputs: int
    same_predictions: bool

    def allowed(self, tolerance: float) -> float:
        """`tolerance` for logits up to 1 in magnitude, relative to the largest logit beyond.

        Float32 rounding grows with the size of the logits (a well-trained model reaches 10-20);
        an absolute bound alone would reject faithful exports of confident models.
        """
        return tolerance * max(1.0, self.logit_scale)

    def __str__(self) -> str:
        return (
            f"ONNX Runtime vs PyTorch: max |logit diff| {self.max_abs_diff:.2e} (logits up to "
            f"{self.logit_scale:.1f}) "
            f"on {self.n_inputs} real inputs, predictions identical: {self.same_predictions}"
        )


def export_onnx(
    model: nn.Module,
    inputs: torch.Tensor,
    path: Path,
    *,
    metadata: ModelMetadata,
    opset: int = 17,
    tolerance: float = 1e-4,
) -> ParityReport:
    """Write `model` to `path` with a dynamic batch axis and `metadata`, then check it.

    Args:
        model: the trained network (moved to the CPU and put in eval mode).
        inputs: real network inputs (N, 3, H, W) used for the trace and the parity check.
        path: the .onnx file to write.
        metadata: what every consumer needs (classes, transform, window, provenance), stored as
            ONNX metadata properties (`ModelMetadata.to_onnx_props`).
        opset: ONNX opset (17 or newer).
        tolerance: largest accepted |logit difference| between ONNX Runtime and PyTorch, for
            logits up to 1 in magnitude (scaled by the largest |logit| beyond, see `ParityReport.allowed`).

    Returns:
        The parity numbers.

    Raises:
        ExportError: the ONNX checker fails, or ONNX Runtime differs by more than `tolerance` or
            predicts a different class for any input.
    """
    from deploy.inferencer import create_session

    model = model.to("cpu").eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (inputs[:2].contiguous(),),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
        )
    proto = onnx.load(str(path))
    metadata.write_into(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"ONNX checker rejected {path}: {exc}") from None
    onnx.save(proto, str(path))

    with torch.no_grad():
        expected = model(inputs).numpy()
    session = create_session(path, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]
    report = ParityReport(
        max_abs_diff=float(np.max(np.abs(got - expected))) if len(got) else 0.0,
        logit_scale=float(np.max(np.abs(expected))) if len(expected) else 0.0,
        n_inputs=int(len(inputs)),
        same_predictions=bool(np.array_equal(got.argmax(1), expected.argmax(1))),
    )
    if report.max_abs_diff > report.allowed(tolerance) or not report.same_predictions:
        raise ExportError(
            f"{path}: {report}, allowed {report.allowed(tolerance):.2e}; the export is not faithful"
        )
    return report
