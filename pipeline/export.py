"""The export stage: the best network to ONNX with its `ModelMetadata`, and its INT8/FP16 variants.

`pipeline run` (through `pipeline.job`) and `pipeline export` (the CLI) both go through
`check_variants`, so a variant is built and judged from the same inputs either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import ParityReport, export_onnx
from deploy.variants import VariantReport, build_variants
from pipeline.config import JobConfig
from pipeline.data import PreparedData
from pipeline.errors import UserError
from pipeline.report import TrialResult


def data_channels(cfg: JobConfig) -> list[int | str]:
    """Which channels of a signal file the model reads (indices or names; the folder source picks them)."""
    return list(cfg.data.folder.channels) if cfg.data.source == "folder" and cfg.data.folder else [0]


def model_metadata(
    cfg: JobConfig, data: PreparedData, best: TrialResult, *, run_id: str, data_hash: str, version: str
) -> ModelMetadata:
    """The metadata written into the exported model (see `deploy.metadata`)."""
    window = data.window or {}
    return ModelMetadata.for_transform(
        data.classes,
        data.transform,
        window=None if data.is_image else (window["length"], window["hop"]),
        channels=data_channels(cfg),
        file_channels=data.file_channels,
        model=ModelInfo(
            name=cfg.tracking.registered_model,
            version=version,
            backbone=cfg.model.backbone,
            strategy=best.strategy,
            seed=best.seed,
            train_fraction=best.train_fraction,
            run_id=run_id,
            strategy_run_id=best.run_id,
            data_hash=data_hash,
        ),
        metrics={"test_accuracy": best.test_accuracy, "test_macro_f1": best.test_macro_f1},
    )


def export_best(
    model: torch.nn.Module, data: PreparedData, metadata: ModelMetadata, path: Path, cfg: JobConfig
) -> ParityReport:
    """Write the best network to `path` (checked against PyTorch on real test inputs) and log it to
    the active MLflow run in the PyTorch flavour too."""
    import mlflow

    inputs = data.images["test"][: min(64, len(data.images["test"]))]
    parity = export_onnx(
        model, inputs, path, metadata=metadata, opset=cfg.export.opset, tolerance=cfg.export.tolerance
    )
    mlflow.log_metric("onnx_max_abs_diff", parity.max_abs_diff)
    log_pytorch_model(model, inputs[:2])
    return parity


def log_pytorch_model(model: torch.nn.Module, example: torch.Tensor) -> None:
    """The best network in MLflow's PyTorch flavour too (for fine-tuning further or inspecting it)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model.eval()
    with torch.no_grad():
        out = model(example).numpy()
    mlflow.pytorch.log_model(
        model,
        name="pytorch-model",
        signature=infer_signature(example.numpy(), out),
        input_example=example.numpy(),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "efficientnet-lite-pytorch==0.1.0"],
    )


def check_compatible(metadata: ModelMetadata, data: PreparedData) -> None:
    """Refuse to judge a model on data it was not trained for (other classes, kind, window, rate, transform).

    Raises:
        UserError: the model and the config's data differ; the message says in what.
    """
    fix = "give the config the model was trained with"
    if list(data.classes) != list(metadata.classes):
        raise UserError(
            f"the model's classes {list(metadata.classes)} differ from the data's {data.classes}; {fix}"
        )
    if data.is_image != metadata.is_image:
        raise UserError(f"the model is a{'n image' if metadata.is_image else ' signal'} model; {fix}")
    if not data.is_image and (data.window or {}).get("length") != metadata.window_length:
        raise UserError(
            f"the model takes windows of {metadata.window_length} samples but CONFIG cuts "
            f"{(data.window or {}).get('length')}; {fix}"
        )
    if (
        not data.is_image
        and metadata.fs is not None
        and abs(data.transform.fs - metadata.fs) > 1e-6 * metadata.fs
    ):
        raise UserError(
            f"the model expects {metadata.fs:g} Hz but CONFIG's data is at {data.transform.fs:g} Hz; {fix}"
        )
    ours = json.loads(json.dumps(data.transform.to_dict()))
    theirs = json.loads(json.dumps(dict(metadata.transform)))
    if ours != theirs:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise UserError(f"the model's transform differs from CONFIG's in {differ}; {fix}")


def check_variants(
    onnx_path: Path,
    kinds: list[str],
    data: PreparedData,
    *,
    calibration_inputs: int,
    max_accuracy_drop: float,
    echo: Callable[[str], None],
) -> list[VariantReport]:
    """Build the variants next to `onnx_path`: INT8 calibrated on `calibration_inputs` training
    inputs (a seeded random pick), each one checked on the whole test split against the FP32 model."""
    train = data.images["train"]
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:calibration_inputs])
    return build_variants(
        onnx_path,
        list(dict.fromkeys(kinds)),
        calibration=train[torch.from_numpy(pick)].numpy(),
        test_inputs=data.images["test"].numpy(),
        test_labels=np.asarray(data.windows["test"].y),
        tolerance_points=max_accuracy_drop,
        echo=echo,
    )
