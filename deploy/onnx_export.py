"""Export a trained classifier to ONNX, embed its metadata, and prove ONNX Runtime reproduces it.

The graph's first output is ``logits``; with a `FeatureProjection` a second output ``features``
holds the penultimate features (the input of the classification head) projected by a PCA fitted
on training features: the drift watch of the service gets them with every prediction, at the cost
of one small matrix product inside the graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from deploy.errors import ExportError
from deploy.metadata import FEATURES_OUTPUT, DriftReference, ModelMetadata

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class FeatureProjection:
    """The ``features`` output: (input of module `head` - `mean`) @ `components`.

    Attributes:
        head: dotted path of the classification head (`models.head_path(backbone)`).
        mean: (D,) mean of the training features.
        components: (D, k) the first k principal axes, as columns.
        explained_variance: fraction of the training features' variance the k axes keep.
    """

    head: str
    mean: np.ndarray
    components: np.ndarray
    explained_variance: float = 0.0

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])


class _WithFeatures(nn.Module):
    """`model` returning (logits, projected penultimate features); the head's input is caught by a
    forward pre-hook, so any backbone works without knowing its forward."""

    def __init__(self, model: nn.Module, projection: FeatureProjection) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("pca_mean", torch.as_tensor(projection.mean, dtype=torch.float32))
        self.register_buffer("pca_components", torch.as_tensor(projection.components, dtype=torch.float32))
        self._caught: list[torch.Tensor] = []
        self._hook = model.get_submodule(projection.head).register_forward_pre_hook(self._catch)

    def release(self) -> None:
        """Remove the hook from the wrapped model (the caller's model is left as it was)."""
        self._hook.remove()

    def _catch(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._caught.append(args[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._caught.clear()
        logits = self.model(x)
        features = self._caught[-1].flatten(1)
        mean, components = self.get_buffer("pca_mean"), self.get_buffer("pca_components")
        return logits, (features - mean) @ components


def penultimate_features(model: nn.Module, head: str, inputs: torch.Tensor, *, batch: int = 64) -> np.ndarray:
    """(N, D) the input of module `head` (the classification head) for each network input, in eval mode."""
    model = model.to("cpu").eval()
    caught: list[torch.Tensor] = []
    handle = model.get_submodule(head).register_forward_pre_hook(
        lambda module, args: caught.append(args[0].flatten(1))
    )
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch):
                model(inputs[start : start + batch])
    finally:
        handle.remove()
    return torch.cat(caught).numpy() if caught else np.zeros((0, 0), np.float32)


def rewrite_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Replace the metadata of the .onnx file at `path` (the graph is left as it is)."""
    proto = onnx.load(str(path))
    metadata.write_into(proto)
    onnx.save(proto, str(path))


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduced PyTorch on the check inputs of `export_onnx`.

    Attributes:
        max_abs_diff: largest |logit difference| over all inputs and classes.
        logit_scale: largest |logit| PyTorch produced (what `allowed` scales the tolerance by).
        n_inputs: how many inputs were compared.
        same_predictions: every input got the same class from both, ties within twice the accepted
            difference aside (`same_decisions`).
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


def same_decisions(got: np.ndarray, expected: np.ndarray, margin: float) -> bool:
    """Both logit arrays (N, C) give the same class wherever `expected` decides by more than `margin`.

    An input whose top two PyTorch logits are within `margin` is a tie at float32 precision: the
    accepted logit difference can flip it either way (an untrained or saturated net gives many).
    """
    if not len(expected) or expected.shape[1] < 2:
        return True
    top2 = np.sort(expected, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > margin
    return bool(np.array_equal(got[decisive].argmax(1), expected[decisive].argmax(1)))


def export_onnx(
    model: nn.Module,
    inputs: torch.Tensor,
    path: Path,
    *,
    metadata: ModelMetadata,
    opset: int = 17,
    tolerance: float = 1e-4,
    features: FeatureProjection | None = None,
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
        features: add the second output ``features`` (projected penultimate features); the parity
            check stays on the logits.

    Returns:
        The parity numbers.

    Raises:
        ExportError: the ONNX checker fails, or ONNX Runtime differs by more than `tolerance` or
            predicts a different class for any input.
    """
    from deploy.inferencer import create_session

    model = model.to("cpu").eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    traced: nn.Module = model if features is None else _WithFeatures(model, features).eval()
    outputs = [OUTPUT_NAME] if features is None else [OUTPUT_NAME, FEATURES_OUTPUT]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                traced,
                (inputs[:2].contiguous(),),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                opset_version=opset,
            )
    finally:
        if isinstance(traced, _WithFeatures):
            traced.release()
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
    diff = float(np.max(np.abs(got - expected))) if len(got) else 0.0
    scale = float(np.max(np.abs(expected))) if len(expected) else 0.0
    allowed = ParityReport(diff, scale, len(inputs), True).allowed(tolerance)
    report = ParityReport(
        max_abs_diff=diff,
        logit_scale=scale,
        n_inputs=int(len(inputs)),
        same_predictions=same_decisions(got, expected, 2 * allowed),
    )
    if report.max_abs_diff > report.allowed(tolerance) or not report.same_predictions:
        raise ExportError(
            f"{path}: {report}, allowed {report.allowed(tolerance):.2e}; the export is not faithful"
        )
    return report


def export_with_reference(
    model: nn.Module,
    inputs: torch.Tensor,
    path: Path,
    *,
    metadata: ModelMetadata,
    head: str,
    reference_inputs: torch.Tensor,
    transform: Any,
    window_length: int | None,
    conditions: np.ndarray | None = None,
    condition_range: Mapping[str, tuple[float, float]] | None = None,
    recording: np.ndarray | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
    dims: int = 32,
    samples: int = 256,
    seed: int = 0,
) -> tuple[ParityReport, DriftReference]:
    """`export_onnx` with the ``features`` output and a drift reference in the metadata.

    The PCA of the ``features`` output is fitted on the penultimate features of `reference_inputs`
    (training network inputs); the reference (`deploy.drift.build_reference`) is computed by ONNX
    Runtime on the written model, so the service compares like with like.

    Args:
        head: the backbone's classification head (`models.head_path`): its input is the feature.
        reference_inputs: training network inputs to summarise (a seeded sample, see
            `deploy.drift.reference_pick`).
        conditions: (len(reference_inputs), 2) rpm and load of each (NaN unknown), or None.
        condition_range: per condition, [min, max] over the training split.
        recording: (len(reference_inputs),) the training recording of each, or None.
    """
    from deploy.drift import build_reference, fit_projection
    from deploy.inferencer import create_session

    raw = penultimate_features(model, head, reference_inputs)
    mean, components, kept = fit_projection(raw, dims)
    projection = FeatureProjection(head, mean, components, kept)
    parity = export_onnx(
        model, inputs, path, metadata=metadata, opset=opset, tolerance=tolerance, features=projection
    )
    session = create_session(path, providers=["CPUExecutionProvider"])
    reference = build_reference(
        session,
        reference_inputs.numpy(),
        transform=transform,
        window_length=window_length,
        conditions=conditions,
        condition_range=condition_range,
        recording=recording,
        raw_dim=int(raw.shape[1]),
        explained_variance=kept,
        samples=samples,
        seed=seed,
    )
    rewrite_metadata(path, metadata.with_drift(reference))
    return parity, reference
