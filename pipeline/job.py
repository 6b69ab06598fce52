"""`pipeline run`: ingest -> split -> windows -> images -> train strategies -> compare -> export -> register."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import signal2image
from models import build_model, get_preprocessing
from pipeline.config import JobConfig, StrategyConfig
from pipeline.errors import UserError
from pipeline.ingest import load_recordings
from pipeline.ingest.split import SPLIT_NAMES, RecordingSplit, split_by_recording
from pipeline.ingest.windows import WindowSet, make_windows
from pipeline.metrics import classification_metrics, confusion_matrix
from pipeline.report import HEADERS, StrategyRow, comparison_csv, markdown_table, text_table
from pipeline.tracking import ensure_experiment, is_local_store, resolve_tracking_uri, tracked_run, use_store
from pipeline.train import fit, predict_logits, seed_everything, select_device


@dataclass
class PreparedData:
    """Everything the strategies share: the split, windows and network inputs of each split."""

    classes: list[str]
    split: RecordingSplit
    windows: dict[str, WindowSet]
    images: dict[str, torch.Tensor]
    transform: signal2image.SignalToImage
    seconds: float

    def report(self) -> dict[str, Any]:
        """Recordings and windows per class and split, and skipped recordings."""
        rec = self.split.report()
        out: dict[str, Any] = {"classes": self.classes, "recordings": rec, "windows": {}, "skipped_short_recordings": {}}
        for name, ws in self.windows.items():
            counts = np.bincount(ws.y, minlength=len(self.classes))
            out["windows"][name] = {c: int(n) for c, n in zip(self.classes, counts)}
            out["skipped_short_recordings"][name] = list(ws.skipped)
        return out

    def fingerprint(self) -> str:
        """Hash of the split (which recording went where) and the window contents."""
        digest = hashlib.sha256()
        for name in SPLIT_NAMES:
            ws = self.windows[name]
            digest.update(name.encode())
            digest.update("\n".join(ws.recording_ids).encode())
            digest.update(np.ascontiguousarray(ws.x[:: max(1, len(ws) // 64)]).tobytes())
        return digest.hexdigest()[:16]


@dataclass
class JobResult:
    parent_run_id: str
    rows: list[StrategyRow]
    best: StrategyRow
    onnx_path: Path
    parity: Any
    registered_model: str
    model_version: str
    alias: str
    tracking_uri: str
    data_seconds: float


def prepare_data(cfg: JobConfig, echo: Callable[[str], None] = print) -> PreparedData:
    """Ingest, split by recording, cut windows and turn them into network inputs."""
    start = time.perf_counter()
    recordings = load_recordings(cfg.data)
    classes = list(dict.fromkeys(r.label for r in recordings))
    split = split_by_recording(recordings, cfg.data.split)
    win = cfg.data.window
    windows = {name: make_windows(recs, classes, win.length, win.hop) for name, recs in split.parts().items()}
    for name, ws in windows.items():
        missing = [c for i, c in enumerate(classes) if not np.any(ws.y == i)]
        if missing:
            raise UserError(
                f"the {name} split has no window of class(es) {missing}: their recordings are shorter than "
                f"data.window.length = {win.length}; lower the window length or add longer recordings"
            )
    transform = build_transform(cfg)
    images = {}
    for name, ws in windows.items():
        t0 = time.perf_counter()
        images[name] = transform(ws.x)
        echo(f"  {name:5s}: {len(split.parts()[name]):4d} recordings -> {len(ws):6d} windows -> {tuple(images[name].shape[1:])} images ({time.perf_counter() - t0:.1f} s)")
    return PreparedData(classes, split, windows, images, transform, time.perf_counter() - start)


def build_transform(cfg: JobConfig) -> signal2image.SignalToImage:
    pre = get_preprocessing(cfg.model.backbone)
    t = cfg.transform
    common = dict(fs=cfg.data.fs, image_size=t.image_size, floor_db=t.floor_db, mean=pre.mean, std=pre.std)
    settings = t.cwt.model_dump() if t.kind == "cwt" else t.stft.model_dump()
    return signal2image.from_dict({"kind": t.kind, **common, **settings})


def run_job(cfg: JobConfig, *, config_path: str | None = None, echo: Callable[[str], None] = print) -> JobResult:
    """Run the whole job; see the module docstring for the stages.

    Raises:
        UserError: bad data or settings found while running.
        ExportError: the ONNX model does not reproduce the PyTorch model.
    """
    import mlflow

    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    use_store(tracking_uri)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = select_device(cfg.train.device)
    echo(f"[1/4] data: {cfg.data.source}, {cfg.transform.kind} images of {cfg.transform.image_size} px")
    data = prepare_data(cfg, echo)
    experiment_id = ensure_experiment(cfg.tracking.experiment, tracking_uri=tracking_uri, artifact_dir=cfg.tracking.artifact_dir)
    data_hash = data.fingerprint()
    tags = {
        "job": cfg.name,
        "config_file": str(config_path or "defaults"),
        "data_hash": data_hash,
        "device": device.type,
        "torch": torch.__version__,
    }
    with tracked_run(experiment_id=experiment_id, run_name=cfg.name, tags=tags) as parent:
        parent_id = parent.info.run_id
        out_dir = cfg.export.dir / cfg.name / parent_id
        mlflow.log_params(cfg.flat_params())
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        mlflow.log_dict(data.report(), "split_report.json")
        mlflow.log_metric("data_seconds", data.seconds)
        for name in SPLIT_NAMES:
            mlflow.log_metric(f"{name}_windows", len(data.windows[name]))
            mlflow.log_metric(f"{name}_recordings", len(data.split.parts()[name]))

        echo(f"[2/4] training {len(cfg.train.strategies)} strategies on {device.type} ({cfg.model.backbone})")
        rows, models_ = [], {}
        for strategy in cfg.train.strategies:
            row, model = run_strategy(cfg, strategy, data, device=device, experiment_id=experiment_id, checkpoint_dir=out_dir / "checkpoints", echo=echo)
            rows.append(row)
            models_[row.strategy] = model

        best = max(rows, key=lambda r: getattr(r, cfg.train.select_metric))
        table_rows = [r.cells() for r in rows]
        mlflow.log_text(markdown_table(HEADERS, table_rows), "comparison.md")
        mlflow.log_text(comparison_csv(rows), "comparison.csv")
        mlflow.set_tags({"best_strategy": best.strategy, "best_run_id": best.run_id})
        mlflow.log_metrics({"best_test_accuracy": best.test_accuracy, "best_test_macro_f1": best.test_macro_f1})

        echo(f"[3/4] exporting {best.strategy} (best {cfg.train.select_metric}) to ONNX")
        onnx_path = out_dir / "model.onnx"
        from deploy.onnx_export import export_onnx

        parity_inputs = data.images["test"][: min(64, len(data.images["test"]))]
        metadata = {
            "classes": data.classes,
            "transform": data.transform.to_dict(),
            "window": {"length": cfg.data.window.length, "hop": cfg.data.window.hop},
            "fs": cfg.data.fs,
            "input_shape": ["batch", 3, cfg.transform.image_size, cfg.transform.image_size],
            "normalisation": {"mean": list(data.transform.mean), "std": list(data.transform.std)},
            "model": {
                "name": cfg.tracking.registered_model,
                "backbone": cfg.model.backbone,
                "strategy": best.strategy,
                "run_id": parent_id,
                "strategy_run_id": best.run_id,
                "data_hash": data_hash,
            },
            "metrics": {"test_accuracy": best.test_accuracy, "test_macro_f1": best.test_macro_f1},
        }
        parity = export_onnx(models_[best.strategy], parity_inputs, onnx_path, metadata=metadata, opset=cfg.export.opset, tolerance=cfg.export.tolerance)
        echo(f"  {parity}")
        mlflow.log_metric("onnx_max_abs_diff", parity.max_abs_diff)

        echo(f"[4/4] registering in the MLflow model registry as {cfg.tracking.registered_model!r}")
        version = register_onnx(onnx_path, parity_inputs, cfg, best, data_hash)
    return JobResult(
        parent_run_id=parent_id,
        rows=rows,
        best=best,
        onnx_path=onnx_path,
        parity=parity,
        registered_model=cfg.tracking.registered_model,
        model_version=version,
        alias=cfg.tracking.alias,
        tracking_uri=tracking_uri,
        data_seconds=data.seconds,
    )


def run_strategy(
    cfg: JobConfig,
    strategy: StrategyConfig,
    data: PreparedData,
    *,
    device: torch.device,
    experiment_id: str,
    checkpoint_dir: Path,
    echo: Callable[[str], None],
) -> tuple[StrategyRow, torch.nn.Module]:
    """Train one strategy in its own child run and evaluate it on the test recordings."""
    import mlflow

    n_classes = len(data.classes)
    weights = "imagenet" if strategy.pretrained else "random"
    with tracked_run(experiment_id=experiment_id, run_name=strategy.name, nested=True, tags={"strategy": strategy.name, "weights": weights}) as run:
        mlflow.log_params({"strategy": strategy.name, "kind": strategy.kind, "lr": strategy.lr, "weights": weights, "backbone": cfg.model.backbone})
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model.backbone, num_classes=n_classes, pretrained=strategy.pretrained, dropout=cfg.model.dropout)

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            mlflow.log_metrics(row, step=epoch)
            echo(
                f"  {strategy.name:>10s} epoch {epoch + 1}/{cfg.train.epochs}: train loss {row['train_loss']:.3f}, "
                f"val acc {row['val_accuracy']:.3f} ({row['epoch_seconds']:.1f} s)"
            )

        result = fit(
            model,
            (data.images["train"], torch.from_numpy(data.windows["train"].y)),
            (data.images["val"], torch.from_numpy(data.windows["val"].y)),
            n_classes=n_classes,
            strategy=strategy,
            cfg=cfg.train,
            device=device,
            checkpoint=checkpoint_dir / f"{strategy.name}.pt",
            on_epoch=on_epoch,
        )
        test = data.windows["test"]
        probs = torch.softmax(predict_logits(model, data.images["test"], device=device), dim=1).numpy()
        pred = probs.argmax(1)
        metrics = classification_metrics(test.y, pred, n_classes)
        rec_true, rec_pred = recording_votes(test, probs)
        rec_acc = float(np.mean(rec_true == rec_pred)) if len(rec_true) else 0.0
        best_row = result.history[result.best_epoch]
        mlflow.log_metrics(
            {
                "test_accuracy": metrics["accuracy"],
                "test_macro_f1": metrics["macro_f1"],
                "test_balanced_accuracy": metrics["balanced_accuracy"],
                "test_recording_accuracy": rec_acc,
                "best_val_accuracy": best_row["val_accuracy"],
                "best_epoch": result.best_epoch,
                "train_seconds": result.train_seconds,
            }
        )
        cm = confusion_matrix(test.y, pred, n_classes)
        mlflow.log_dict({"classes": data.classes, "matrix": cm.tolist()}, "confusion_matrix.json")
        row = StrategyRow(
            strategy=strategy.name,
            weights=weights,
            val_accuracy=best_row["val_accuracy"],
            val_macro_f1=best_row["val_macro_f1"],
            test_accuracy=metrics["accuracy"],
            test_macro_f1=metrics["macro_f1"],
            test_recording_accuracy=rec_acc,
            best_epoch=result.best_epoch,
            train_seconds=result.train_seconds,
            run_id=run.info.run_id,
        )
    return row, model.cpu()


def recording_votes(windows: WindowSet, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-recording truth and verdict (class of the mean window probability)."""
    truth, verdict = [], []
    for r in range(len(windows.recording_ids)):
        mask = windows.recording == r
        truth.append(windows.y[mask][0])
        verdict.append(int(probs[mask].mean(axis=0).argmax()))
    return np.asarray(truth), np.asarray(verdict)


def register_onnx(onnx_path: Path, inputs: torch.Tensor, cfg: JobConfig, best: StrategyRow, data_hash: str) -> str:
    """Log the ONNX model to the active (parent) run, register it and point the alias at the new version."""
    import mlflow
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    from deploy.inferencer import choose_providers, create_session

    example = inputs[:2].numpy()
    logits = create_session(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"input": example})[0]
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name="model",
        registered_model_name=cfg.tracking.registered_model,
        signature=infer_signature(example, logits),
        save_as_external_data=False,
        onnx_execution_providers=choose_providers(),
        pip_requirements=[f"onnxruntime-gpu=={onnxruntime.__version__}", f"onnx=={onnx.__version__}", "numpy"],
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    name = cfg.tracking.registered_model
    for key, value in {
        "strategy": best.strategy,
        "test_accuracy": f"{best.test_accuracy:.4f}",
        "test_macro_f1": f"{best.test_macro_f1:.4f}",
        "data_hash": data_hash,
        "job": cfg.name,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, cfg.tracking.alias, version)
    return version


def summary(result: JobResult) -> str:
    """What the user reads at the end of `pipeline run`."""
    lines = ["", text_table(HEADERS, [r.cells() for r in result.rows]), ""]
    lines.append(f"best strategy: {result.best.strategy}")
    lines.append(f"ONNX model:    {result.onnx_path}")
    lines.append(f"               {result.parity}")
    lines.append(
        f"registered:    models:/{result.registered_model}/{result.model_version}, alias '{result.alias}' -> version "
        f"{result.model_version} (models:/{result.registered_model}@{result.alias})"
    )
    if is_local_store(result.tracking_uri):
        lines.append(f"MLflow UI:     pipeline ui    (= mlflow ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1 --port 5000)")
    else:
        lines.append(f"MLflow UI:     {result.tracking_uri}")
    lines.append(f"predict:       pipeline predict --model models:/{result.registered_model}@{result.alias} FILE.npy")
    return "\n".join(lines)

