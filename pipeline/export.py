"""The export stage: the best network to ONNX with its `ModelMetadata`, and its INT8/FP16 variants.

`pipeline run` (through `pipeline.job`) and `pipeline export` (the CLI) both go through
`check_variants`, so a variant is built and judged from the same inputs either way.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.drift import CONDITIONS, SUMMARISED_INPUTS, reference_pick
from deploy.errors import ExportError
from deploy.metadata import ModelInfo, ModelMetadata
from deploy.onnx_export import ParityReport, export_with_reference
from deploy.signal_model import SignalParity, export_signal_model
from deploy.variants import VariantReport, build_variants
from models import build_model, scoring_head, single_view
from pipeline.config import JobConfig
from pipeline.data import PreparedData
from pipeline.errors import UserError
from pipeline.operating_point import class_offsets
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
            tta=cfg.model.tta,
            operating_point=operating_point_label(cfg, best),
            class_offsets=tuple(exported_offsets(cfg, data, best)),
        ),
        metrics={"test_accuracy": best.test_accuracy, "test_macro_f1": best.test_macro_f1},
    )


def operating_point_label(cfg: JobConfig, best: TrialResult) -> str:
    """How the exported graph decides, in words ("" for plain argmax)."""
    point = cfg.train.operating_point
    if point is None:
        return ""
    return (
        f"recall of {point.label!r} >= {point.recall:g} on validation: logit offset {best.class_offset:+.4f}"
    )


def exported_offsets(cfg: JobConfig, data: PreparedData, best: TrialResult) -> list[float]:
    """The per-class logit offsets the exported graph adds ([] without `train.operating_point`)."""
    point = cfg.train.operating_point
    if point is None:
        return []
    return class_offsets(len(data.classes), data.classes.index(point.label), best.class_offset)


def drift_inputs(
    data: PreparedData,
) -> tuple[torch.Tensor, np.ndarray, dict[str, tuple[float, float]], np.ndarray | None]:
    """What the drift reference summarises: a seeded sample of at most `SUMMARISED_INPUTS` training
    inputs, the (rpm, load) of the recording each came from (NaN where the data has none), each
    condition's [min, max] over the training recordings, and the recording of each input (None for
    images). The same inputs every time for the same data (the variants' references are recomputed
    from them). The conditions come from the split's units, which keep them on a cache hit too."""
    train = data.windows["train"]
    pick = reference_pick(len(train), SUMMARISED_INPUTS, seed=0)
    by_id = {getattr(u, "id", ""): getattr(u, "condition", {}) or {} for u in data.split.train}

    def value(condition: dict[str, Any], name: str) -> float:
        try:
            return float(condition[name])
        except (KeyError, TypeError, ValueError):
            return float("nan")

    per_recording = np.array(
        [[value(by_id.get(rid, {}), name) for name in CONDITIONS] for rid in train.recording_ids]
    ).reshape(len(train.recording_ids), len(CONDITIONS))
    conditions = (
        per_recording[np.asarray(train.recording)[pick]]
        if len(per_recording)
        else np.full((len(pick), len(CONDITIONS)), np.nan)
    )
    ranges = {
        name: (float(np.nanmin(column)), float(np.nanmax(column)))
        for name, column in zip(CONDITIONS, per_recording.T)
        if np.isfinite(column).any()
    }
    recording = None if data.is_image else np.asarray(train.recording)[pick].astype(np.int64)
    return data.images["train"][torch.from_numpy(pick)], conditions, ranges, recording


def export_best(
    model: torch.nn.Module, data: PreparedData, metadata: ModelMetadata, path: Path, cfg: JobConfig
) -> ParityReport:
    """Write the best network to `path` (checked against PyTorch on real test inputs) with the
    ``features`` output and the drift reference of the training data (`drift_inputs`), and log its
    weights and architecture to the active MLflow run too (`log_pytorch_model`)."""
    import mlflow

    inputs = data.images["test"][: min(64, len(data.images["test"]))]
    reference_inputs, conditions, ranges, recording = drift_inputs(data)
    parity, reference = export_with_reference(
        model,
        inputs,
        path,
        metadata=metadata,
        head=scoring_head(model, cfg.model.backbone),
        reference_inputs=reference_inputs,
        transform=data.transform,
        window_length=None if data.is_image else (data.window or {}).get("length"),
        conditions=conditions,
        condition_range=ranges,
        recording=recording,
        opset=cfg.export.opset,
        tolerance=cfg.export.tolerance,
    )
    mlflow.log_metric("onnx_max_abs_diff", parity.max_abs_diff)
    mlflow.log_metric("drift_reference_samples", reference.size)
    architecture = {
        "backbone": cfg.model.backbone,
        "num_classes": len(data.classes),
        **cfg.architecture(),
        "classes": list(data.classes),
        # What the ONNX graph adds around these single-view weights (models.decision_model rebuilds it).
        "tta": cfg.model.tta,
        "class_offsets": list(metadata.model.class_offsets),
    }
    log_pytorch_model(single_view(model), architecture)
    return parity


def export_signal(
    onnx_path: Path, data: PreparedData, *, tolerance: float, echo: Callable[[str], None]
) -> tuple[Path | None, SignalParity | None]:
    """For a signal model, the raw-signal model beside `onnx_path` (`deploy.signal_model`), checked on
    the whole test split against the Python transform + image model (same classes, logits within
    `tolerance`). A transform the graph cannot express, or a failed check, is said and skipped: the
    image model still serves (through the Python transform)."""
    if data.is_image:
        return None, None
    try:
        path, parity = export_signal_model(
            onnx_path,
            data.transform,
            data.windows["test"].x,
            data.images["test"].numpy(),
            tolerance=tolerance,
        )
    except ExportError as exc:
        echo(f"  raw-signal model not written: {exc}")
        return None, None
    echo(f"  raw-signal model {path.name}: {parity}")
    return path, parity


PYTORCH_ARTIFACTS = "pytorch-model"  # artifact folder of the run: state_dict.pt and architecture.json


def log_pytorch_model(model: torch.nn.Module, architecture: dict[str, Any]) -> None:
    """The network's weights as a plain state dict (``pytorch-model/state_dict.pt``, loadable with
    ``torch.load(weights_only=True)``: no pickled code, unlike MLflow's PyTorch flavour) and what
    rebuilds it (``pytorch-model/architecture.json``: backbone, num_classes, in_channels, dropout,
    classes), as artifacts of the active run. `load_pytorch_model` reads them back."""
    import mlflow

    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "state_dict.pt")
        (Path(tmp) / "architecture.json").write_text(json.dumps(architecture, indent=2))
        mlflow.log_artifacts(tmp, artifact_path=PYTORCH_ARTIFACTS)


def load_pytorch_model(source: str, *, tracking_uri: str | None = None) -> torch.nn.Module:
    """The network `log_pytorch_model` logged, rebuilt with `models.build_model` (eval mode).

    It is the single-view network: where ``architecture.json`` names ``tta`` views or
    ``class_offsets``, the ONNX graph averages it over the views and adds the offsets
    (`models.decision_model(model, backbone, tta, class_offsets)` rebuilds that).

    Args:
        source: a run id, or an artifact URI of the folder (``runs:/RUN_ID/pytorch-model``, or any
            URI MLflow downloads).
        tracking_uri: the store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db).

    Raises:
        UserError: the URI could reach outside the store, does not resolve, or holds no
            state_dict.pt and architecture.json.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from deploy.store import check_model_uri, check_server
    from pipeline.tracking import resolve_tracking_uri, use_store

    uri = source if ":" in source else f"runs:/{source}/{PYTORCH_ARTIFACTS}"
    check_model_uri(uri)
    store = resolve_tracking_uri(tracking_uri)
    check_server(store)
    use_store(store)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as exc:
            raise UserError(f"cannot download {uri!r} from the store {store}: {exc.message}") from None
        files = {name: local / name for name in ("state_dict.pt", "architecture.json")}
        if not all(f.is_file() for f in files.values()):
            raise UserError(
                f"{uri!r} holds no state_dict.pt and architecture.json; give the run id of a `pipeline run` "
                f"(or its runs:/RUN_ID/{PYTORCH_ARTIFACTS} folder)"
            )
        arch = json.loads(files["architecture.json"].read_text())
        state = torch.load(files["state_dict.pt"], map_location="cpu", weights_only=True)
    model = build_model(
        arch["backbone"],
        num_classes=int(arch["num_classes"]),
        pretrained=False,
        in_channels=int(arch["in_channels"]),
        dropout=float(arch["dropout"]),
        band_rows=None if arch.get("band_rows") is None else int(arch["band_rows"]),  # absent: none
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


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
        reference_inputs=drift_inputs(data)[0].numpy(),
    )
