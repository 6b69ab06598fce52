"""The training stage: every strategy x train fraction x seed, each in its own MLflow child run.

A trial trains one network (`pipeline.train.fit`), scores it on the test split
(`pipeline.evaluate`), logs both and, with `train.explain`, the per-class relevance maps of the
test samples it classified correctly (`pipeline.explain`). The best trial by the validation metric
(`train.select_metric`) is kept in memory for the export stage. Under torchrun the ranks other
than 0 run `run_worker`: the same trials in the same order, training only.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import ClassOffset, build_model, with_views
from pipeline import distributed
from pipeline.augment import make_augment
from pipeline.baselines import check_applicable, fit_baseline
from pipeline.config import JobConfig, StrategyConfig
from pipeline.data import PreparedData, prepare_data, train_subset
from pipeline.errors import UserError
from pipeline.evaluate import evaluate_on_test, log_test_evaluation, score_test
from pipeline.explain import log_job_explanations
from pipeline.metrics import classification_metrics
from pipeline.operating_point import choose_offset, class_offsets
from pipeline.plots import learning_curves_figure, to_png
from pipeline.report import TrialResult
from pipeline.robustness import (
    PerturbedSplits,
    perturbed_splits,
    robust_metrics,
    robustness_scores,
    val_robust,
)
from pipeline.tracking import log_png, tracked_run
from pipeline.train import best_checkpoint_path, fit, predict_logits, seed_everything, select_device

Plan = list[tuple[StrategyConfig, float, int]]


@dataclass
class TrialsOutcome:
    """Every trial's result, and the best one (by validation) with its network."""

    trials: list[TrialResult]
    best: TrialResult
    best_model: torch.nn.Module


def training_plan(cfg: JobConfig) -> Plan:
    """(strategy, train fraction, seed) of every trial, in the order they run."""
    return [
        (s, f, seed)
        for s in cfg.train.strategies
        for f in cfg.train.train_fraction
        for seed in cfg.train.seeds
    ]


def trial_name(cfg: JobConfig, strategy: str, fraction: float, seed: int) -> str:
    """`finetune`, or `finetune-frac0.2-seed1` when the job sweeps fractions or seeds."""
    name = strategy
    if len(cfg.train.train_fraction) > 1:
        name += f"-frac{fraction:g}"
    if len(cfg.train.seeds) > 1:
        name += f"-seed{seed}"
    return name


def run_trials(
    cfg: JobConfig,
    data: PreparedData,
    *,
    device: torch.device,
    experiment_id: str,
    checkpoint_dir: Path,
    echo: Callable[[str], None],
    previous: dict[str, Any],
) -> TrialsOutcome:
    """Run the plan; `previous` holds the runs of an interrupted job being resumed, by run name."""
    trials: list[TrialResult] = []
    best, best_model = None, None
    for strategy in cfg.train.strategies:
        check_applicable(strategy, is_image=data.is_image)
    point = cfg.train.operating_point
    if point is not None and point.label not in data.classes:
        raise UserError(
            f"train.operating_point.label {point.label!r} is not a class of this data; "
            f"use one of {list(data.classes)}"
        )
    if point is not None and not np.any(data.windows["val"].y == data.classes.index(point.label)):
        raise UserError(
            f"train.operating_point.label {point.label!r}: the validation split holds no sample of it, "
            "so its recall cannot be chosen there; give data.split more validation or drop operating_point"
        )
    sets = None
    if cfg.train.robustness and not data.is_image:
        sets = perturbed_splits(data)
        echo(
            f"  robustness: {len(sets.windows['val'])} perturbations of the validation and test windows "
            "(noise 20/10/0 dB, shifts, gains)"
        )
    for strategy, fraction, seed in training_plan(cfg):
        if strategy.is_baseline:
            trials.append(
                run_baseline_trial(
                    cfg,
                    strategy,
                    fraction,
                    seed,
                    data,
                    experiment_id=experiment_id,
                    echo=echo,
                    previous=previous.get(trial_name(cfg, strategy.name, fraction, seed)),
                    sets=sets,
                )
            )
            continue
        trial, model = run_trial(
            cfg,
            strategy,
            fraction,
            seed,
            data,
            device=device,
            experiment_id=experiment_id,
            checkpoint_dir=checkpoint_dir,
            echo=echo,
            previous=previous.get(trial_name(cfg, strategy.name, fraction, seed)),
            sets=sets,
        )
        trials.append(trial)
        metric = cfg.train.select_metric
        if best is None or getattr(trial, metric) > getattr(best, metric):
            best, best_model = trial, model  # only the best network stays in memory; baselines never
    assert best is not None and best_model is not None
    return TrialsOutcome(trials, best, best_model)


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
    sets: PerturbedSplits | None = None,
) -> tuple[TrialResult, torch.nn.Module]:
    """Train one strategy on one fraction with one seed in its own child run; evaluate on the test split.

    `previous`: this trial's run in the interrupted job being resumed: kept as it is when it
    finished, continued from its last checkpoint otherwise.
    """
    import mlflow

    n_classes = len(data.classes)
    pretrained = starts_pretrained(cfg, strategy)
    weights = weights_label(cfg, pretrained)
    name = trial_name(cfg, strategy.name, fraction, seed)
    subset = train_subset(data.windows["train"], fraction, seed)
    checkpoint = checkpoint_dir / f"{name}.pt"
    if previous is not None and previous.info.status == "FINISHED":
        return finished_trial(cfg, previous, checkpoint, data, echo)
    tags = {
        "strategy": strategy.name,
        "weights": weights,
        "seed": str(seed),
        "train_fraction": f"{fraction:g}",
    }
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
                "lr": strategy.rate,
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
        if previous is not None:
            log_lost_epochs(run.info.run_id, result.history)
        scored, val_scores, offset = finish_model(cfg, model, data, device=device, name=name, echo=echo)
        test = evaluate_on_test(scored, data, device=device)
        single = result.history[result.best_epoch]
        best_row = {**single, **val_scores}
        metrics = {
            **test.metrics,
            "best_val_accuracy": best_row["val_accuracy"],
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
        }
        if val_scores:  # what chose the epoch: one view, argmax
            metrics["best_val_accuracy_epoch"] = single["val_accuracy"]
        if cfg.train.operating_point is not None:
            metrics["class_offset"] = offset
        mlflow.log_metrics(metrics)
        log_test_evaluation(test, data.classes, name)
        robust = score_robustness(
            lambda w, images: torch.softmax(predict_logits(scored, images, device=device), 1).numpy(),
            sets,
            best_row["val_accuracy"],
            name,
            echo,
        )
        if cfg.train.explain:
            explained = log_job_explanations(
                model, data, test.probabilities, backbone=cfg.model.backbone, name=name
            )
            echo(f"  {name:>12s}: explained {sum(e.samples for e in explained)} correct test samples")
        curves = learning_curves_figure(
            {name: result.history}, f"{name} ({weights} weights, lr {strategy.rate:g})"
        )
        log_png(to_png(curves), "learning_curves.png")
        trial = TrialResult(
            strategy=strategy.name,
            weights=weights,
            seed=seed,
            train_fraction=fraction,
            val_accuracy=best_row["val_accuracy"],
            val_macro_f1=best_row["val_macro_f1"],
            test_accuracy=test.metrics["test_accuracy"],
            test_macro_f1=test.metrics["test_macro_f1"],
            test_recording_accuracy=test.metrics["test_recording_accuracy"],
            best_epoch=result.best_epoch,
            train_seconds=result.train_seconds,
            run_id=run.info.run_id,
            test_correct=test.correct,
            test_total=test.total,
            val_robust=robust[0],
            robust_test=robust[1],
            class_offset=offset,
            history=tuple(result.history),
        )
        mlflow.log_dict({**dataclasses.asdict(trial), "history": list(trial.history)}, "trial.json")
    return trial, scored.cpu()


def finish_model(
    cfg: JobConfig,
    model: torch.nn.Module,
    data: PreparedData,
    *,
    device: torch.device,
    name: str,
    echo: Callable[[str], None],
    offset: float | None = None,
) -> tuple[torch.nn.Module, dict[str, float], float]:
    """The trained network as the trial is scored and exported: inside the view average of
    `model.tta` and the class offset of `train.operating_point` (chosen here on validation, or the
    given `offset` of a finished trial). Returns that model, its validation accuracy and macro-F1
    (empty with neither option: the per-epoch validation stands) and the offset (0 without one).

    The epoch was chosen before, on single-view argmax validation; Grad-CAM explains `model` itself.
    """
    scored = with_views(model, cfg.model.backbone, cfg.model.tta)
    point = cfg.train.operating_point
    if point is None and scored is model:
        return model, {}, 0.0
    logits = predict_logits(scored, data.images["val"], device=device).numpy()  # one validation pass
    if point is None:
        return scored, val_scores_of(logits, data), 0.0
    index = data.classes.index(point.label)
    if offset is None:
        chosen = choose_offset(logits, data.windows["val"].y, index, point.recall)
        offset = chosen.offset
        echo(
            f"  {name:>12s}: recall of {point.label!r} {chosen.val_recall:.3f} (>= {point.recall:g}) on "
            f"validation with logit offset {offset:+.3f}, val acc {chosen.val_accuracy:.3f}"
        )
    offsets = torch.tensor(class_offsets(len(data.classes), index, offset))
    logits = logits + offsets.numpy()
    return ClassOffset(scored, offsets).to(device), val_scores_of(logits, data), offset


def val_scores_of(logits: np.ndarray, data: PreparedData) -> dict[str, float]:
    """Validation accuracy and macro-F1 of the model as it is exported (what the trial is chosen by)."""
    scores = classification_metrics(data.windows["val"].y, logits.argmax(1), len(data.classes))
    return {"val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}


BASELINE_WEIGHTS = "baseline"  # the weights column of a baseline's row


def run_baseline_trial(
    cfg: JobConfig,
    strategy: StrategyConfig,
    fraction: float,
    seed: int,
    data: PreparedData,
    *,
    experiment_id: str,
    echo: Callable[[str], None],
    previous: Any = None,
    sets: PerturbedSplits | None = None,
) -> TrialResult:
    """Fit one classical baseline (`pipeline.baselines`) on the trial's training subset, C chosen on
    validation, in its own child run with the networks' test metrics and confusion matrix."""
    import mlflow

    name = trial_name(cfg, strategy.name, fraction, seed)
    if previous is not None and previous.info.status == "FINISHED":
        saved = mlflow.artifacts.load_dict(f"{previous.info.artifact_uri}/trial.json")
        echo(f"  {name:>12s}: finished before the interruption (test acc {saved['test_accuracy']:.3f}), kept")
        return TrialResult(**{**saved, "history": tuple(saved["history"])})
    subset = train_subset(data.windows["train"], fraction, seed)
    pixels = strategy.kind == "pixels_logreg"  # network inputs; the other kinds take the windows
    if pixels:
        train = (data.images["train"][torch.from_numpy(subset)], data.windows["train"].y[subset])
        val = (data.images["val"], data.windows["val"].y)
    else:
        train = (data.windows["train"].x[subset], data.windows["train"].y[subset])
        val = (data.windows["val"].x, data.windows["val"].y)
    tags = {"strategy": strategy.name, "weights": BASELINE_WEIGHTS, "seed": str(seed)}
    start = (
        {"run_id": previous.info.run_id}
        if previous is not None
        else {
            "experiment_id": experiment_id,
            "run_name": name,
            "tags": {**tags, "train_fraction": f"{fraction:g}", "baseline": "true"},
        }
    )
    with tracked_run(nested=True, **start) as run:
        options = {"bins": strategy.bins} if strategy.kind == "spectrum_logreg" else {}
        options.update({"pool": strategy.pool} if strategy.kind == "pixels_logreg" else {})
        mlflow.log_params(
            {
                "strategy": strategy.name,
                "kind": strategy.kind,
                "seed": seed,
                "train_fraction": fraction,
                **options,
            }
        )
        mlflow.log_metric("train_windows_used", len(subset))
        fitted = fit_baseline(
            strategy,
            train,
            val,
            n_classes=len(data.classes),
            seed=seed,
            select_metric=cfg.train.select_metric,
            balanced=cfg.train.class_weighting != "none",
            window_norm=getattr(data.transform, "signal_norm", "none") == "window",
        )
        test_inputs = data.images["test"] if pixels else data.windows["test"].x
        test = score_test(fitted.predict_proba(test_inputs), data)
        mlflow.log_params({"C": fitted.c})
        mlflow.log_metrics(
            {
                **test.metrics,
                "val_accuracy": fitted.val_accuracy,
                "val_macro_f1": fitted.val_macro_f1,
                "best_val_accuracy": fitted.val_accuracy,
                "train_seconds": fitted.seconds,
            }
        )
        mlflow.log_dict({str(c): v for c, v in fitted.grid.items()}, "c_grid.json")
        log_test_evaluation(test, data.classes, name)
        robust = score_robustness(
            lambda w, images: fitted.predict_proba(images if pixels else w),
            sets,
            fitted.val_accuracy,
            name,
            echo,
        )
        trial = TrialResult(
            strategy=strategy.name,
            weights=BASELINE_WEIGHTS,
            seed=seed,
            train_fraction=fraction,
            val_accuracy=fitted.val_accuracy,
            val_macro_f1=fitted.val_macro_f1,
            test_accuracy=test.metrics["test_accuracy"],
            test_macro_f1=test.metrics["test_macro_f1"],
            test_recording_accuracy=test.metrics["test_recording_accuracy"],
            best_epoch=0,
            train_seconds=fitted.seconds,
            run_id=run.info.run_id,
            test_correct=test.correct,
            test_total=test.total,
            baseline=True,
            val_robust=robust[0],
            robust_test=robust[1],
        )
        mlflow.log_dict({**dataclasses.asdict(trial), "history": []}, "trial.json")
    echo(
        f"  {name:>12s}: baseline, C {fitted.c:g} chosen on validation: val acc {fitted.val_accuracy:.3f} "
        f"({fitted.seconds:.1f} s)"
    )
    return trial


def score_robustness(
    classify: Callable[[np.ndarray, torch.Tensor], np.ndarray],
    sets: PerturbedSplits | None,
    clean_val_accuracy: float,
    name: str,
    echo: Callable[[str], None],
) -> tuple[float, dict[str, float]]:
    """(val_robust, test accuracy per perturbation) of a trial's classifier, logged to its run; the
    clean validation accuracy and nothing else without perturbed splits."""
    import mlflow

    if sets is None:
        return clean_val_accuracy, {}
    scores = robustness_scores(classify, sets)
    robust = val_robust(clean_val_accuracy, scores)
    mlflow.log_metrics({**robust_metrics(scores), "val_robust": robust})
    worst = min(scores["test"], key=lambda k: scores["test"][k])
    echo(
        f"  {name:>12s}: val_robust {robust:.3f}; "
        f"worst perturbed test acc {scores['test'][worst]:.3f} ({worst})"
    )
    return robust, dict(scores["test"])


def log_lost_epochs(run_id: str, history: list[dict[str, float]]) -> None:
    """A resumed trial's epochs whose metrics the interruption lost: the checkpoint of an epoch is
    written before its metrics are logged, so a stop in between keeps the epoch on disk only."""
    import mlflow

    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "val_accuracy")}
    for epoch, row in enumerate(history):
        if epoch not in logged:
            mlflow.log_metrics(row, step=epoch)


def starts_pretrained(cfg: JobConfig, strategy: StrategyConfig) -> bool:
    """Every strategy but scratch starts from the weights, unless `model.weights: none`."""
    return strategy.pretrained and cfg.model.weights != "none"


def weights_label(cfg: JobConfig, pretrained: bool) -> str:
    """``imagenet``, the user's weights file name, or ``random``."""
    if not pretrained:
        return "random"
    return "imagenet" if cfg.model.weights_path is None else cfg.model.weights_path.name


def new_model(cfg: JobConfig, strategy: StrategyConfig, n_classes: int, seed: int) -> torch.nn.Module:
    """The trial's network, seeded: the same on every rank under torchrun."""
    pretrained = starts_pretrained(cfg, strategy)
    seed_everything(seed)
    return build_model(
        cfg.model.backbone,
        num_classes=n_classes,
        pretrained=pretrained,
        weights_path=cfg.model.weights_path if pretrained else None,
        **cfg.architecture(),
    )


def trial_data(
    data: PreparedData, subset: np.ndarray
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, val) network inputs and labels; train restricted to `subset`."""
    index = torch.from_numpy(subset)
    train = (data.images["train"][index], torch.from_numpy(data.windows["train"].y)[index])
    return train, (data.images["val"], torch.from_numpy(data.windows["val"].y))


def finished_trial(
    cfg: JobConfig, run: Any, checkpoint: Path, data: PreparedData, echo: Callable[[str], None]
) -> tuple[TrialResult, torch.nn.Module]:
    """A trial that finished before the interruption: its result from the run, its best weights from disk."""
    import mlflow

    saved = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/trial.json")
    trial = TrialResult(**{**saved, "history": tuple(saved["history"])})
    best = best_checkpoint_path(checkpoint)
    if not best.is_file():
        raise UserError(
            f"--resume: trial {run.info.run_name!r} finished but its checkpoint {best} is gone; "
            "run the job again without --resume"
        )
    model = load_best(cfg, len(data.classes), best)
    echo(
        f"  {run.info.run_name:>12s}: finished before the interruption "
        f"(test acc {trial.test_accuracy:.3f}), kept"
    )
    scored, _, _ = finish_model(
        cfg,
        model,
        data,
        device=torch.device("cpu"),
        name=run.info.run_name,
        echo=echo,
        offset=trial.class_offset,
    )
    return trial, scored


def load_best(cfg: JobConfig, n_classes: int, best: Path) -> torch.nn.Module:
    """The network of a trial's best-epoch checkpoint `best` (no pretrained weights are read first)."""
    model = build_model(cfg.model.backbone, num_classes=n_classes, pretrained=False, **cfg.architecture())
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
    return model


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
            if strategy.is_baseline:  # rank 0 fits the baselines alone
                continue
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
