"""`pipeline run`: the job as a sequence of stages, each in its own module.

ingest (`pipeline.data`) -> trials (`pipeline.trials`, which trains with `pipeline.train` and
scores with `pipeline.evaluate`) -> report (`pipeline.report`) -> export (`pipeline.export`)
-> registry (`pipeline.registry`). MLflow holds one parent run per job and one child run per trial.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deploy.onnx_export import ParityReport
from models import build_model
from pipeline import distributed, provenance
from pipeline.config import JobConfig
from pipeline.data import PreparedData, examples, prepare_data
from pipeline.errors import UserError
from pipeline.export import check_variants, export_best, export_signal, model_metadata
from pipeline.ingest.split import SPLIT_NAMES
from pipeline.operating_point import decision_rule
from pipeline.plots import to_png
from pipeline.registry import DECISION_TAG, Registration, next_version, register_best, register_variants
from pipeline.report import Aggregate, TrialResult, aggregate, log_comparison
from pipeline.resume import ResumePoint, resume_point
from pipeline.tracking import (
    check_server,
    ensure_experiment,
    log_png,
    resolve_tracking_uri,
    tracked_run,
    use_store,
)
from pipeline.train import select_device
from pipeline.trials import run_trials, training_plan, trial_name


@dataclass
class JobResult:
    """What `run_job` did: the trials, the best one, its ONNX export and its registration."""

    parent_run_id: str
    trials: list[TrialResult]
    best: TrialResult
    onnx_path: Path
    parity: ParityReport
    registration: Registration
    tracking_uri: str
    is_image: bool = False
    export_notes: list[str] = field(default_factory=list)  # variants and Triton repository
    select_metric: str = "val_accuracy"

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
    check_server(tracking_uri, source="tracking.uri")  # before MLflow retries for minutes
    use_store(tracking_uri)
    device = setup_device(cfg)
    echo(f"[1/4] data: {cfg.data.source}, {cfg.transform.kind} inputs of {cfg.transform.image_size} px")
    data = prepare_data(cfg, echo)
    check_before_training(cfg, device, resume=resume, echo=echo)
    experiment_id = ensure_experiment(
        cfg.tracking.experiment, tracking_uri=tracking_uri, artifact_dir=cfg.tracking.artifact_dir
    )
    data_hash, config_hash = data.fingerprint(), provenance.config_hash(cfg)
    earlier = resume_point(experiment_id, cfg.name, config_hash, data_hash, echo) if resume else ResumePoint()
    tags = {**provenance.run_tags(cfg, config_path, data, device, data_hash), "config_hash": config_hash}
    start = (
        {"run_id": earlier.run.info.run_id}
        if earlier.run
        else {"experiment_id": experiment_id, "run_name": cfg.name, "tags": tags}
    )
    with tracked_run(**start) as parent:
        parent_id = parent.info.run_id
        out_dir = cfg.export.dir / cfg.name / parent_id
        example_png = log_inputs(cfg, data)

        echo(
            f"[2/4] training {len(training_plan(cfg))} model(s) on {device.type} ({cfg.model.backbone}): "
            "strategies x train fractions x seeds"
        )
        outcome = run_trials(
            cfg,
            data,
            device=device,
            experiment_id=experiment_id,
            checkpoint_dir=out_dir / "checkpoints",
            echo=echo,
            previous=earlier.children,
        )
        best = outcome.best
        log_comparison(cfg, outcome.trials, logged={"examples.png": example_png}, best=best)
        mlflow.set_tags({"best_strategy": best.strategy, "best_run_id": best.run_id})
        mlflow.log_metrics(
            {"best_test_accuracy": best.test_accuracy, "best_test_macro_f1": best.test_macro_f1}
        )

        name = trial_name(cfg, best.strategy, best.train_fraction, best.seed)
        echo(f"[3/4] exporting {name} (best {cfg.train.select_metric}) to ONNX")
        onnx_path = out_dir / "model.onnx"
        version = next_version(cfg.tracking.registered_model)
        metadata = model_metadata(cfg, data, best, run_id=parent_id, data_hash=data_hash, version=version)
        parity = export_best(outcome.best_model, data, metadata, onnx_path, cfg)
        echo(f"  {parity}")
        _, signal_parity = export_signal(onnx_path, data, tolerance=cfg.export.tolerance, echo=echo)
        if signal_parity is not None:
            mlflow.log_metrics(
                {
                    "signal_model_max_abs_diff": signal_parity.max_abs_diff,
                    "signal_model_agreement": signal_parity.agreement,
                }
            )

        echo(f"[4/4] registering in the MLflow model registry as {cfg.tracking.registered_model!r}")
        registration = register_best(cfg, onnx_path, data, best, run_id=parent_id, data_hash=data_hash)
        mlflow.set_tags({"registered_version": registration.version, "registered_alias": registration.alias})
        notes = export_extras(
            cfg,
            onnx_path,
            data,
            tags={
                "data_hash": data_hash,
                "job": cfg.name,
                "run_id": parent_id,
                "strategy": best.strategy,
                DECISION_TAG: decision_rule(cfg.train.operating_point),
            },
            echo=echo,
        )
    return JobResult(
        parent_id,
        outcome.trials,
        best,
        onnx_path,
        parity,
        registration,
        tracking_uri,
        data.is_image,
        notes,
        cfg.train.select_metric,
    )


def setup_device(cfg: JobConfig) -> torch.device:
    """Threads as configured, and the training device (CUDA when usable, see `train.device`)."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    return select_device(cfg.train.device)


def check_before_training(
    cfg: JobConfig, device: torch.device, *, resume: bool, echo: Callable[[str], None]
) -> None:
    """What would otherwise fail after hours of training: torchrun with --resume, missing
    weights, an export folder that cannot be made or written."""
    world = distributed.world()
    if world is not None:
        if resume:
            raise UserError(
                "--resume is not supported under torchrun; resume with a single process (pipeline run CONFIG "
                "--resume)"
            )
        distributed.barrier()  # the other ranks now read the data from the cache rank 0 wrote
        backend = "nccl" if device.type == "cuda" else "gloo"
        echo(f"  data-parallel: {world.size} processes ({backend}); rank 0 tracks, evaluates and exports")
    if cfg.model.weights != "none" and any(s.pretrained for s in cfg.train.strategies):
        build_model(cfg.model.backbone, num_classes=2, pretrained=True, weights_path=cfg.model.weights_path)
    try:
        cfg.export.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"export.dir: cannot create {str(cfg.export.dir)!r} ({exc.strerror}); choose a writable folder"
        ) from None
    try:  # exists is not enough: checkpoints are written there after the first epoch
        with tempfile.NamedTemporaryFile(dir=cfg.export.dir, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UserError(
            f"export.dir: cannot write files in {str(cfg.export.dir)!r} ({exc.strerror or exc}); "
            "choose a writable folder or fix its permissions"
        ) from None


def log_inputs(cfg: JobConfig, data: PreparedData) -> bytes:
    """The parent run's parameters, config, split report, sizes and example inputs (PNG returned)."""
    import mlflow

    mlflow.log_params(cfg.flat_params())
    mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
    mlflow.log_dict(data.report(), "split_report.json")
    example_png = to_png(examples(data))
    log_png(example_png, "examples.png")
    mlflow.log_metrics({"data_seconds": data.seconds, "skipped_files": len(data.skipped_files)})
    for name in SPLIT_NAMES:
        mlflow.log_metric(f"{name}_windows", len(data.windows[name]))
        mlflow.log_metric(f"{name}_units", len(data.windows[name].recording_ids))  # recordings or parts
    return example_png


def export_extras(
    cfg: JobConfig, onnx_path: Path, data: PreparedData, *, tags: dict[str, str], echo: Callable[[str], None]
) -> list[str]:
    """The configured INT8/FP16 variants (checked on the test set; registered as `<model>-<kind>`
    only when they lose at most `export.max_accuracy_drop` points) and the Triton repository."""
    from deploy.variants import write_triton_repository

    notes: list[str] = []
    if cfg.export.variants:
        echo(
            f"  variants {', '.join(cfg.export.variants)}: calibrated on training inputs, checked on the "
            f"{len(data.windows['test'])} test inputs"
        )
        reports = check_variants(
            onnx_path,
            list(cfg.export.variants),
            data,
            calibration_inputs=cfg.export.calibration_inputs,
            max_accuracy_drop=cfg.export.max_accuracy_drop,
            echo=echo,
        )
        notes += register_variants(cfg, reports, data, tags=tags)
    if cfg.export.triton_dir is not None:
        folder = write_triton_repository(onnx_path, cfg.export.triton_dir, name=cfg.tracking.registered_model)
        notes.append(f"Triton repository: {folder} (tritonserver --model-repository {cfg.export.triton_dir})")
    return notes
