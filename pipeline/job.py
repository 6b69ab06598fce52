"""`pipeline run`: ingest -> split -> windows -> images -> train strategies -> compare -> export -> register."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.onnx_export import ParityReport, export_onnx
from models import build_model
from pipeline import distributed
from pipeline.augment import make_augment
from pipeline.config import JobConfig, StrategyConfig
from pipeline.data import PreparedData, examples, prepare_data, train_subset
from pipeline.errors import UserError
from pipeline.ingest.split import SPLIT_NAMES
from pipeline.ingest.windows import WindowSet
from pipeline.metrics import classification_metrics, confusion_matrix, per_class_metrics
from pipeline.plots import bar_figure, confusion_figure, learning_curves_figure, sweep_figure, to_png
from pipeline.registry import Registration, register_onnx
from pipeline.report import (
    HEADERS,
    Aggregate,
    TrialResult,
    aggregate,
    html_report,
    markdown_report,
    text_table,
    trials_csv,
)
from pipeline.tracking import (
    ensure_experiment,
    is_local_store,
    log_png,
    resolve_tracking_uri,
    tracked_run,
    use_store,
)
from pipeline.train import best_checkpoint_path, fit, predict_logits, seed_everything, select_device


@dataclass
class JobResult:
    parent_run_id: str
    trials: list[TrialResult]
    best: TrialResult
    onnx_path: Path
    parity: ParityReport
    registration: Registration
    tracking_uri: str
    is_image: bool = False
    export_notes: list[str] = field(default_factory=list)  # variants and Triton repository

    @property
    def aggregates(self) -> list[Aggregate]:
        return aggregate(self.trials)


def run_job(
    cfg: JobConfig,
    *,
    config_path: str | None = None,
    echo: Callable[[str], None] = print,
    resume: bool = False,
) -> JobResult:
    """Run the whole job: data, every strategy x train fraction x seed, report, export, registry.

    Args:
        resume: continue the last interrupted (KILLED or FAILED) run of this same config: its
            finished trials are kept, the interrupted one continues from its last checkpoint.

    Raises:
        UserError: bad data or settings found while running; nothing to resume.
        ExportError: the ONNX model does not reproduce the PyTorch model.
    """
    import mlflow

    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    use_store(tracking_uri)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = select_device(cfg.train.device)
    echo(f"[1/4] data: {cfg.data.source}, {cfg.transform.kind} inputs of {cfg.transform.image_size} px")
    data = prepare_data(cfg, echo)
    world = distributed.world()
    if world is not None:
        if resume:
            raise UserError(
                "--resume is not supported under torchrun; resume with a single process (pipeline run CONFIG --resume)"
            )
        distributed.barrier()  # the other ranks now read the data from the cache rank 0 wrote
        echo(
            f"  data-parallel: {world.size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}); rank 0 tracks, evaluates and exports"
        )
    if cfg.model.weights != "none" and any(s.pretrained for s in cfg.train.strategies):
        build_model(
            cfg.model.backbone, num_classes=2, pretrained=True, weights_path=cfg.model.weights_path
        )  # a missing weights file fails now, not after hours
    try:
        cfg.export.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"export.dir: cannot create {str(cfg.export.dir)!r} ({exc.strerror}); choose a writable folder"
        ) from None
    experiment_id = ensure_experiment(
        cfg.tracking.experiment, tracking_uri=tracking_uri, artifact_dir=cfg.tracking.artifact_dir
    )
    data_hash = data.fingerprint()
    config_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]
    earlier = interrupted_run(experiment_id, cfg.name, config_hash) if resume else None
    children = {} if earlier is None else child_runs(experiment_id, earlier.info.run_id)
    if earlier is not None and earlier.data.tags.get("data_hash") != data_hash:
        raise UserError(
            f"--resume: the data changed since run {earlier.info.run_id} (data hash {earlier.data.tags.get('data_hash')} -> {data_hash}); "
            "its trials are not comparable with new ones: run without --resume"
        )
    if earlier is not None and earlier.info.status == "RUNNING":
        echo(
            f"  warning: run {earlier.info.run_id} is marked RUNNING (killed without a chance to end it?); make sure no other process still runs it"
        )
    if earlier is not None:
        echo(
            f"  resuming run {earlier.info.run_id} ({earlier.info.status}): {sum(r.info.status == 'FINISHED' for r in children.values())} finished trial(s) kept"
        )
    start = (
        {"run_id": earlier.info.run_id}
        if earlier is not None
        else {
            "experiment_id": experiment_id,
            "run_name": cfg.name,
            "tags": {**run_tags(cfg, config_path, data, device, data_hash), "config_hash": config_hash},
        }
    )
    with tracked_run(**start) as parent:
        parent_id = parent.info.run_id
        out_dir = cfg.export.dir / cfg.name / parent_id
        mlflow.log_params(cfg.flat_params())
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        mlflow.log_dict(data.report(), "split_report.json")
        example_png = to_png(examples(data))
        log_png(example_png, "examples.png")
        mlflow.log_metrics({"data_seconds": data.seconds, "skipped_files": len(data.skipped_files)})
        for name in SPLIT_NAMES:
            mlflow.log_metric(f"{name}_windows", len(data.windows[name]))
            mlflow.log_metric(f"{name}_units", len(data.windows[name].recording_ids))  # recordings or parts

        plan = training_plan(cfg)
        echo(
            f"[2/4] training {len(plan)} model(s) on {device.type} ({cfg.model.backbone}): strategies x train fractions x seeds"
        )
        trials: list[TrialResult] = []
        best, best_model = None, None
        for strategy, fraction, seed in plan:
            previous = children.get(trial_name(cfg, strategy.name, fraction, seed))
            trial, model = run_trial(
                cfg,
                strategy,
                fraction,
                seed,
                data,
                device=device,
                experiment_id=experiment_id,
                checkpoint_dir=out_dir / "checkpoints",
                echo=echo,
                previous=previous,
            )
            trials.append(trial)
            if best is None or getattr(trial, cfg.train.select_metric) > getattr(
                best, cfg.train.select_metric
            ):
                best, best_model = trial, model  # only the best network stays in memory
        assert best is not None and best_model is not None
        log_comparison(cfg, trials, logged={"examples.png": example_png})
        mlflow.set_tags({"best_strategy": best.strategy, "best_run_id": best.run_id})
        mlflow.log_metrics(
            {"best_test_accuracy": best.test_accuracy, "best_test_macro_f1": best.test_macro_f1}
        )

        echo(
            f"[3/4] exporting {trial_name(cfg, best.strategy, best.train_fraction, best.seed)} (best {cfg.train.select_metric}) to ONNX"
        )
        onnx_path = out_dir / "model.onnx"
        inputs = data.images["test"][: min(64, len(data.images["test"]))]
        metadata = {
            "classes": data.classes,
            "transform": data.transform.to_dict(),
            **(
                {}
                if data.is_image
                else {"window": data.window, "fs": data.transform.fs, "channels": data_channels(cfg)}
            ),
            "input_shape": [
                "batch",
                cfg.model.in_channels,
                cfg.transform.image_size,
                cfg.transform.image_size,
            ],
            "normalisation": {"mean": list(data.transform.mean), "std": list(data.transform.std)},
            "model": {
                "name": cfg.tracking.registered_model,
                "version": next_version(cfg.tracking.registered_model),
                "backbone": cfg.model.backbone,
                "strategy": best.strategy,
                "seed": best.seed,
                "train_fraction": best.train_fraction,
                "run_id": parent_id,
                "strategy_run_id": best.run_id,
                "data_hash": data_hash,
            },
            "metrics": {"test_accuracy": best.test_accuracy, "test_macro_f1": best.test_macro_f1},
        }
        parity = export_onnx(
            best_model,
            inputs,
            onnx_path,
            metadata=metadata,
            opset=cfg.export.opset,
            tolerance=cfg.export.tolerance,
        )
        echo(f"  {parity}")
        mlflow.log_metric("onnx_max_abs_diff", parity.max_abs_diff)
        log_pytorch_model(best_model, inputs[:2])

        echo(f"[4/4] registering in the MLflow model registry as {cfg.tracking.registered_model!r}")
        registration = register_onnx(
            onnx_path,
            inputs[:2].numpy(),
            name=cfg.tracking.registered_model,
            alias=cfg.tracking.alias,
            correct=round(best.test_accuracy * len(data.windows["test"])),
            total=len(data.windows["test"]),
            tags={
                "strategy": best.strategy,
                "seed": str(best.seed),
                "train_fraction": f"{best.train_fraction:g}",
                "test_macro_f1": f"{best.test_macro_f1:.6f}",
                "data_hash": data_hash,
                "job": cfg.name,
                "run_id": parent_id,
            },
        )
        mlflow.set_tags({"registered_version": registration.version, "registered_alias": registration.alias})
        notes = export_extras(
            cfg,
            onnx_path,
            data,
            tags={"data_hash": data_hash, "job": cfg.name, "run_id": parent_id, "strategy": best.strategy},
            echo=echo,
        )
    return JobResult(
        parent_id, trials, best, onnx_path, parity, registration, tracking_uri, data.is_image, notes
    )


def export_extras(
    cfg: JobConfig, onnx_path: Path, data: PreparedData, *, tags: dict[str, str], echo: Callable[[str], None]
) -> list[str]:
    """The configured INT8/FP16 variants (checked on the test set; registered as `<model>-<kind>`
    only when they lose at most `export.max_accuracy_drop` points) and the Triton repository."""
    import mlflow

    from deploy.variants import build_variants, write_triton_repository

    notes: list[str] = []
    if cfg.export.variants:
        echo(
            f"  variants {', '.join(cfg.export.variants)}: calibrated on training inputs, checked on the {len(data.windows['test'])} test inputs"
        )
        train = data.images["train"]
        pick = np.sort(np.random.default_rng(0).permutation(len(train))[: cfg.export.calibration_inputs])
        reports = build_variants(
            onnx_path,
            list(cfg.export.variants),
            calibration=train[torch.from_numpy(pick)].numpy(),
            test_inputs=data.images["test"].numpy(),
            test_labels=np.asarray(data.windows["test"].y),
            tolerance_points=cfg.export.max_accuracy_drop,
            echo=echo,
        )
        for report in reports:
            mlflow.log_metrics(
                {
                    f"{report.kind}_test_accuracy": report.accuracy,
                    f"{report.kind}_accuracy_drop_points": report.drop_points,
                    f"{report.kind}_agreement": report.agreement,
                    f"{report.kind}_speedup_batch1": report.speedup_batch1,
                    f"{report.kind}_speedup_batch32": report.speedup_batch32,
                }
            )
            if not report.accepted:
                notes.append(
                    f"{report.kind}: not registered, it loses {report.drop_points:.2f} points (> export.max_accuracy_drop {cfg.export.max_accuracy_drop:g})"
                )
                continue
            reg = register_onnx(
                report.path,
                data.images["test"][:2].numpy(),
                name=f"{cfg.tracking.registered_model}-{report.kind}",
                alias=cfg.tracking.alias,
                correct=round(report.accuracy * len(data.windows["test"])),
                total=len(data.windows["test"]),
                tags={
                    **tags,
                    "test_accuracy_fp32": f"{report.reference_accuracy:.6f}",
                    "variant": report.kind,
                },
                artifact=f"model-{report.kind}",
            )
            notes.append(
                f"{report.kind}: {report.path} registered as models:/{reg.name}/{reg.version} ({report.accuracy:.4f} test accuracy, {-report.drop_points:+.2f} points, {report.speedup_batch1:.2f}x at batch 1 on this CPU)"
            )
    if cfg.export.triton_dir is not None:
        folder = write_triton_repository(onnx_path, cfg.export.triton_dir, name=cfg.tracking.registered_model)
        notes.append(f"Triton repository: {folder} (tritonserver --model-repository {cfg.export.triton_dir})")
    return notes


def interrupted_run(experiment_id: str, job: str, config_hash: str) -> Any:
    """The latest parent run of this job and config, which must have been interrupted.

    Raises:
        UserError: there is none, or the latest one finished (nothing to resume).
    """
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.job = '{job}' and tags.config_hash = '{config_hash}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not parents:
        raise UserError(
            f"--resume: no earlier run of job {job!r} with this exact config in the store; run without --resume"
        )
    last = parents[0]
    if last.info.status not in ("KILLED", "FAILED", "RUNNING"):
        raise UserError(
            f"--resume: the last run of job {job!r} with this config ({last.info.run_id}) {last.info.status.lower()}; nothing to resume"
        )
    return last


def child_runs(experiment_id: str, parent_id: str) -> dict[str, Any]:
    """The trial runs of a parent run, by run name."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return {r.info.run_name: r for r in runs}


def next_version(name: str) -> str:
    """The version number the registry will give this job's model (written into the ONNX metadata
    before registering; a concurrent registration of the same name could take it first)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    except MlflowException:
        return "1"
    return str(max((int(v.version) for v in versions), default=0) + 1)


def data_channels(cfg: JobConfig) -> list[int | str]:
    """Which channels of a signal file the model reads (indices or names; the folder source picks them)."""
    return list(cfg.data.folder.channels) if cfg.data.source == "folder" and cfg.data.folder else [0]


def trial_name(cfg: JobConfig, strategy: str, fraction: float, seed: int) -> str:
    """`finetune`, or `finetune-frac0.2-seed1` when the job sweeps fractions or seeds."""
    name = strategy
    if len(cfg.train.train_fraction) > 1:
        name += f"-frac{fraction:g}"
    if len(cfg.train.seeds) > 1:
        name += f"-seed{seed}"
    return name


def run_trial(
    cfg: JobConfig,
    strategy: StrategyConfig,
    fraction: float,
    seed: int,
    data: PreparedData,
    *,
    device: torch.device,
    experiment_id: str,
    checkpoint_dir: Path,
    echo: Callable[[str], None],
    previous: Any = None,
) -> tuple[TrialResult, torch.nn.Module]:
    """Train one strategy on one fraction with one seed in its own child run; evaluate on the test recordings.

    `previous`: this trial's run in the interrupted job being resumed: kept as it is when it
    finished, continued from its last checkpoint otherwise.
    """
    import mlflow

    n_classes = len(data.classes)
    pretrained = starts_pretrained(cfg, strategy)
    weights = (
        ("imagenet" if cfg.model.weights_path is None else cfg.model.weights_path.name)
        if pretrained
        else "random"
    )
    name = trial_name(cfg, strategy.name, fraction, seed)
    subset = train_subset(data.windows["train"], fraction, seed)
    tags = {
        "strategy": strategy.name,
        "weights": weights,
        "seed": str(seed),
        "train_fraction": f"{fraction:g}",
    }
    checkpoint = checkpoint_dir / f"{name}.pt"
    if previous is not None and previous.info.status == "FINISHED":
        return finished_trial(cfg, previous, checkpoint, n_classes, pretrained, echo)
    start = (
        {"run_id": previous.info.run_id}
        if previous is not None
        else {"experiment_id": experiment_id, "run_name": name, "tags": tags}
    )
    with tracked_run(nested=True, **start) as run:
        mlflow.log_params(
            {
                "strategy": strategy.name,
                "kind": strategy.kind,
                "lr": strategy.lr,
                "weights": weights,
                "backbone": cfg.model.backbone,
                "seed": seed,
                "train_fraction": fraction,
            }
        )
        mlflow.log_metric("train_windows_used", len(subset))
        model = new_model(cfg, strategy, n_classes, seed)

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            mlflow.log_metrics(row, step=epoch)
            echo(
                f"  {name:>12s} epoch {epoch + 1}/{cfg.train.epochs}: train loss {row['train_loss']:.3f}, "
                f"val acc {row['val_accuracy']:.3f} ({row['epoch_seconds']:.1f} s)"
            )

        result = fit(
            model,
            *trial_data(data, subset),
            n_classes=n_classes,
            strategy=strategy,
            cfg=cfg.train,
            seed=seed,
            device=device,
            checkpoint=checkpoint,
            backbone=cfg.model.backbone,
            resume=previous is not None,
            on_epoch=on_epoch,
            augment=make_augment(cfg.train.augment, data.transform.std[0]),
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
                **{f"test_{k}": v for k, v in per_class_metrics(test.y, pred, data.classes).items()},
                "best_val_accuracy": best_row["val_accuracy"],
                "best_epoch": result.best_epoch,
                "train_seconds": result.train_seconds,
            }
        )
        cm = confusion_matrix(test.y, pred, n_classes)
        mlflow.log_dict({"classes": data.classes, "matrix": cm.tolist()}, "confusion_matrix.json")
        log_png(
            to_png(
                confusion_figure(
                    cm, data.classes, f"{name}: test windows (accuracy {metrics['accuracy']:.3f})"
                )
            ),
            "confusion_matrix.png",
        )
        log_png(
            to_png(
                learning_curves_figure(
                    {name: result.history}, f"{name} ({weights} weights, lr {strategy.lr:g})"
                )
            ),
            "learning_curves.png",
        )
        trial = TrialResult(
            strategy=strategy.name,
            weights=weights,
            seed=seed,
            train_fraction=fraction,
            val_accuracy=best_row["val_accuracy"],
            val_macro_f1=best_row["val_macro_f1"],
            test_accuracy=metrics["accuracy"],
            test_macro_f1=metrics["macro_f1"],
            test_recording_accuracy=rec_acc,
            best_epoch=result.best_epoch,
            train_seconds=result.train_seconds,
            run_id=run.info.run_id,
            history=tuple(result.history),
        )
        mlflow.log_dict({**dataclasses.asdict(trial), "history": list(trial.history)}, "trial.json")
    return trial, model.cpu()


def starts_pretrained(cfg: JobConfig, strategy: StrategyConfig) -> bool:
    """Every strategy but scratch starts from the weights, unless `model.weights: none`."""
    return strategy.pretrained and cfg.model.weights != "none"


def new_model(cfg: JobConfig, strategy: StrategyConfig, n_classes: int, seed: int) -> torch.nn.Module:
    """The trial's network, seeded: the same on every rank under torchrun."""
    pretrained = starts_pretrained(cfg, strategy)
    seed_everything(seed)
    return build_model(
        cfg.model.backbone,
        num_classes=n_classes,
        pretrained=pretrained,
        dropout=cfg.model.dropout,
        in_channels=cfg.model.in_channels,
        weights_path=cfg.model.weights_path if pretrained else None,
    )


def trial_data(
    data: PreparedData, subset: np.ndarray
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, val) network inputs and labels; train restricted to `subset`."""
    index = torch.from_numpy(subset)
    train = (data.images["train"][index], torch.from_numpy(data.windows["train"].y)[index])
    return train, (data.images["val"], torch.from_numpy(data.windows["val"].y))


def training_plan(cfg: JobConfig) -> list[tuple[StrategyConfig, float, int]]:
    return [
        (s, f, seed)
        for s in cfg.train.strategies
        for f in cfg.train.train_fraction
        for seed in cfg.train.seeds
    ]


def run_worker(cfg: JobConfig) -> None:
    """A rank other than 0 under torchrun: the same trials in the same order, training only."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = select_device(cfg.train.device)
    distributed.barrier()  # rank 0 has prepared the data and written the cache
    data = prepare_data(cfg, echo=lambda line: None)
    scratch = Path(tempfile.mkdtemp(prefix="pipeline-rank-"))
    try:
        for strategy, fraction, seed in training_plan(cfg):
            model = new_model(cfg, strategy, len(data.classes), seed)
            fit(
                model,
                *trial_data(data, train_subset(data.windows["train"], fraction, seed)),
                n_classes=len(data.classes),
                strategy=strategy,
                cfg=cfg.train,
                seed=seed,
                device=device,
                checkpoint=scratch / "unused.pt",
                backbone=cfg.model.backbone,
                augment=make_augment(cfg.train.augment, data.transform.std[0]),
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def finished_trial(
    cfg: JobConfig, run: Any, checkpoint: Path, n_classes: int, pretrained: bool, echo: Callable[[str], None]
) -> tuple[TrialResult, torch.nn.Module]:
    """A trial that finished before the interruption: its result from the run, its best weights from disk."""
    import mlflow

    saved = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/trial.json")
    trial = TrialResult(**{**saved, "history": tuple(saved["history"])})
    best = best_checkpoint_path(checkpoint)
    if not best.is_file():
        raise UserError(
            f"--resume: trial {run.info.run_name!r} finished but its checkpoint {best} is gone; run the job again without --resume"
        )
    model = build_model(
        cfg.model.backbone,
        num_classes=n_classes,
        pretrained=False,
        dropout=cfg.model.dropout,
        in_channels=cfg.model.in_channels,
    )
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
    echo(
        f"  {run.info.run_name:>12s}: finished before the interruption (test acc {trial.test_accuracy:.3f}), kept"
    )
    return trial, model


def recording_votes(windows: WindowSet, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-recording truth and verdict (class of the mean window probability)."""
    truth, verdict = [], []
    for r in range(len(windows.recording_ids)):
        mask = windows.recording == r
        truth.append(int(np.bincount(windows.y[mask]).argmax()))  # a part's majority label, as the split uses
        verdict.append(int(probs[mask].mean(axis=0).argmax()))
    return np.asarray(truth), np.asarray(verdict)


def run_tags(
    cfg: JobConfig, config_path: str | None, data: PreparedData, device: torch.device, data_hash: str
) -> dict[str, str]:
    """Parent-run tags: provenance (git commit, package versions), data hash and sizes, device."""
    tags = {
        "job": cfg.name,
        "config_file": str(config_path or "defaults"),
        "data_hash": data_hash,
        "device": device.type,
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    for package in ("torch", "torchvision", "mlflow", "onnx", "onnxruntime-gpu", "numpy", "PyWavelets"):
        try:
            tags[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for split, counts in data.report()["samples"].items():
        tags[f"size.{split}"] = str(sum(counts.values()))
        for label, n in counts.items():
            tags[f"size.{split}.{label}"] = str(n)
    return tags


def git_commit() -> str | None:
    """Commit of the code that runs (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def log_comparison(cfg: JobConfig, trials: list[TrialResult], logged: dict[str, bytes]) -> None:
    """The comparison on the parent run: CSV of every trial, Markdown and HTML reports with figures.

    `logged` holds figures already logged (by name) that the reports show too.
    """
    import mlflow

    aggs = aggregate(trials)
    top = max(cfg.train.train_fraction)
    at_top = [a for a in aggs if a.train_fraction == top]
    figures = {
        "accuracy_by_strategy.png": to_png(
            bar_figure(
                [a.strategy for a in at_top],
                [a.stat("test_accuracy")[0] for a in at_top],
                [a.stat("test_accuracy")[1] for a in at_top],
                ylabel="test accuracy",
                title=f"test accuracy ({len(cfg.train.seeds)} seed(s), train fraction {top:g})",
            )
        ),
        "learning_curves.png": to_png(
            learning_curves_figure(
                {a.strategy: mean_history(a.trials) for a in at_top}, "validation per epoch (mean over seeds)"
            )
        ),
    }
    if len(cfg.train.train_fraction) > 1:
        curves = {}
        for strategy in dict.fromkeys(a.strategy for a in aggs):
            mine = sorted((a for a in aggs if a.strategy == strategy), key=lambda a: a.train_fraction)
            curves[strategy] = (
                [a.train_fraction for a in mine],
                [a.stat("test_accuracy")[0] for a in mine],
                [a.stat("test_accuracy")[1] for a in mine],
            )
        figures["data_size_sweep.png"] = to_png(sweep_figure(curves, title="test accuracy vs training data"))
    for name, png in figures.items():
        log_png(png, name)
    figures.update(logged)
    title = f"{cfg.name}: {cfg.model.backbone}, {cfg.transform.kind} {cfg.transform.image_size} px"
    notes = [
        f"Mean ± standard deviation over seeds {list(cfg.train.seeds)}; test = held-out recordings; model chosen by {cfg.train.select_metric}."
    ]
    mlflow.log_text(markdown_report(title, aggs, list(figures), notes), "report.md")
    mlflow.log_text(html_report(title, aggs, figures, notes), "report.html")
    mlflow.log_text(trials_csv(trials), "comparison.csv")


def mean_history(trials: tuple[TrialResult, ...]) -> list[dict[str, float]]:
    keys = ("train_loss", "val_loss", "val_accuracy")
    return [
        {k: float(np.mean([t.history[e][k] for t in trials])) for k in keys}
        for e in range(len(trials[0].history))
    ]


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


def summary(result: JobResult) -> str:
    """What the user reads at the end of `pipeline run`."""
    reg = result.registration
    lines = ["", text_table(HEADERS, [a.cells() for a in result.aggregates]), ""]
    lines.append(
        f"best model:    {result.best.strategy} (train fraction {result.best.train_fraction:g}, seed {result.best.seed})"
    )
    lines.append(f"ONNX model:    {result.onnx_path}")
    lines.append(f"               {result.parity}")
    lines.append(
        f"registered:    models:/{reg.name}/{reg.version}, alias '{reg.alias}' -> version {reg.version} ({reg.uri})"
    )
    lines.append(f"               {reg.reason}")
    for note in result.export_notes:
        lines.append(f"export:        {note}")
    if is_local_store(result.tracking_uri):
        lines.append(
            f"MLflow UI:     pipeline ui    (= mlflow ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1 --port 5000)"
        )
    else:
        lines.append(f"MLflow UI:     {result.tracking_uri}")
    lines.append(
        f"predict:       pipeline predict --model {reg.uri} {'IMAGE.png' if result.is_image else 'FILE.npy'}"
    )
    return "\n".join(lines)
