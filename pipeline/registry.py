"""The MLflow model registry: register a job's ONNX model, move `champion` only on a proven improvement,
list versions and promote by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.operating_point import ARGMAX, decision_rule

if TYPE_CHECKING:
    from deploy.variants import VariantReport
    from pipeline.config import JobConfig
    from pipeline.data import PreparedData
    from pipeline.report import TrialResult

CHALLENGER = "challenger"
DECISION_TAG = "decision"  # how the version decides: argmax or a required recall (decide_alias)
COMPARE_METRIC = "test_accuracy"  # for display; the counts below decide
CORRECT_TAG = "test_correct"
TOTAL_TAG = "test_total"


@dataclass(frozen=True)
class Registration:
    """A registered version and the alias it got (`alias`, or ``challenger``), with the reason why."""

    name: str
    version: str
    alias: str
    reason: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def held_counts(tags: dict[str, str], total: int) -> tuple[int, int] | None:
    """(correct, total) test samples of a version from its tags, or None when they cannot be known.

    Versions registered before the counts were stored carry only `test_accuracy`, rounded to 6 decimals:
    on the same test data (same size `total`) the count is recovered exactly as round(accuracy * total)
    while the rounding error, at most 5e-7 * total, stays below half a sample (total < 1,000,000).
    """
    if CORRECT_TAG in tags and TOTAL_TAG in tags:
        try:
            return int(tags[CORRECT_TAG]), int(tags[TOTAL_TAG])
        except ValueError:
            return None
    if COMPARE_METRIC in tags and total < 1_000_000:
        try:
            return round(float(tags[COMPARE_METRIC]) * total), total
        except ValueError:
            return None
    return None


def decide_alias(
    client: Any,
    name: str,
    version: str,
    correct: int,
    total: int,
    data_hash: str,
    alias: str,
    decision: str = ARGMAX,
) -> tuple[str, str]:
    """`alias` when `version` classifies strictly more test samples correctly than the version holding
    it on the same test data, else `challenger`.

    Counts of correct samples are compared, not rounded accuracies, so an identical re-run never wins.
    Versions tested on other data (another data hash, another test size, or no usable score) are not
    comparable, nor are versions that decide by another rule (`decision`: argmax, or a required
    recall of one class, `pipeline.operating_point.decision_rule`; a version without the tag decides by
    argmax): the new one becomes the challenger and a person decides (`pipeline models promote`).
    """
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return alias, f"no version held '{alias}' yet"
    if str(current.version) == str(version):
        return alias, f"version {version} already holds '{alias}'"
    held = held_counts(current.tags, total)
    if current.tags.get("data_hash") != data_hash or held is None or held[1] != total:
        return CHALLENGER, (
            f"'{alias}' (version {current.version}) was tested on other data (data hash "
            f"{current.tags.get('data_hash')} vs {data_hash}"
            + (f", {held[1]} vs {total} test samples" if held and held[1] != total else "")
            + (", no test score" if held is None else "")
            + "); promote by hand if it should replace it"
        )
    held_rule = current.tags.get(DECISION_TAG, ARGMAX)
    if held_rule != decision:
        return CHALLENGER, (
            f"'{alias}' (version {current.version}) decides by {held_rule}, this version by {decision}: "
            "their counts of correct test samples are not comparable; promote by hand if it should replace it"
        )
    mine = f"{correct}/{total} correct test samples ({correct / total:.4f})"
    theirs = f"version {current.version}'s {held[0]}/{total}"
    if correct > held[0]:
        return alias, f"{mine} beats {theirs} on the same test data"
    return CHALLENGER, f"{mine} does not beat {theirs}"


def register_onnx(
    onnx_path: Path,
    example: Any,
    *,
    name: str,
    alias: str,
    tags: dict[str, str],
    correct: int,
    total: int,
    artifact: str = "model",
) -> Registration:
    """Log the ONNX model to the active run, register a new version, tag it, and set its alias.

    Args:
        onnx_path: the exported, parity-checked file.
        example: a real network input batch (numpy), stored as the model's input example.
        name: registered model name.
        alias: the alias to move on improvement (usually ``champion``).
        tags: version tags (must include ``data_hash``).
        correct: how many of the test samples the version classifies correctly, compared with the
            alias holder's count on the same test data.
        total: the number of test samples.
        artifact: the logged model's name in the run (one per variant).

    The raw-signal model beside `onnx_path` (`deploy.signal_model.signal_model_path`), when there is
    one, is logged with it (the model's ``extra_files``), so a service that loads the registered
    model serves signal requests with it.
    """
    if not 0 <= correct <= total or total <= 0:
        raise ValueError(f"expected 0 <= correct <= total and total > 0, got {correct}/{total}")
    import mlflow
    import mlflow.onnx
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    from deploy.inferencer import choose_providers, create_session
    from deploy.signal_model import signal_model_path

    raw = signal_model_path(onnx_path)
    logits = create_session(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"input": example})[0]
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name=artifact,
        registered_model_name=name,
        signature=infer_signature(example, logits),
        input_example=example,
        save_as_external_data=False,
        extra_files=[str(raw)] if raw.is_file() else None,
        onnx_execution_providers=choose_providers(),
        pip_requirements=[
            f"onnxruntime-gpu=={onnxruntime.__version__}",
            f"onnx=={onnx.__version__}",
            "numpy",
        ],
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    scores = {CORRECT_TAG: str(correct), TOTAL_TAG: str(total), COMPARE_METRIC: f"{correct / total:.6f}"}
    for key, value in {**tags, **scores}.items():
        client.set_model_version_tag(name, version, key, value)
    chosen, reason = decide_alias(
        client, name, version, correct, total, tags["data_hash"], alias, tags.get(DECISION_TAG, ARGMAX)
    )
    client.set_registered_model_alias(name, chosen, version)
    return Registration(name, version, chosen, reason)


def list_versions(client: Any) -> list[list[str]]:
    """Rows (model, version, aliases, strategy, test accuracy, data hash, created) of every version."""
    rows = []
    for model in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version)):
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
            rows.append(
                [
                    model.name,
                    str(mv.version),
                    ",".join(sorted(aliases.get(str(mv.version), []))) or "-",
                    mv.tags.get("strategy", "-"),
                    mv.tags.get(COMPARE_METRIC, "-")[:6],
                    mv.tags.get("data_hash", "-"),
                    created,
                ]
            )
    return rows


LIST_HEADERS = ["model", "version", "aliases", "strategy", "test acc", "data hash", "created (UTC)"]


def promote(client: Any, name: str, version: str, alias: str) -> str:
    """Point `alias` at `version` by hand. Raises UserError for an unknown model or version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException:
        known = [m.name for m in client.search_registered_models()]
        raise UserError(
            f"no version {version!r} of model {name!r}; registered models: {known} "
            "(see `pipeline models list`)"
        ) from None
    previous = None
    try:
        previous = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        pass
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise UserError(f"cannot set alias {alias!r}: {exc.message}") from None
    if alias != CHALLENGER:
        try:
            if str(client.get_model_version_by_alias(name, CHALLENGER).version) == str(version):
                client.delete_registered_model_alias(name, CHALLENGER)  # promoted: no longer a challenger
        except MlflowException:
            pass
    return f"models:/{name}@{alias} -> version {version}" + (f" (was version {previous})" if previous else "")


# ----------------------------------------------------------------------------- the registry stage


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


def register_best(
    cfg: JobConfig, onnx_path: Path, data: PreparedData, best: TrialResult, *, run_id: str, data_hash: str
) -> Registration:
    """Register the job's exported model; `champion` moves only on more correct test samples."""
    return register_onnx(
        onnx_path,
        data.images["test"][:2].numpy(),
        name=cfg.tracking.registered_model,
        alias=cfg.tracking.alias,
        correct=best.test_correct,
        total=best.test_total,
        tags={
            "strategy": best.strategy,
            "seed": str(best.seed),
            "train_fraction": f"{best.train_fraction:g}",
            "test_macro_f1": f"{best.test_macro_f1:.6f}",
            "data_hash": data_hash,
            "job": cfg.name,
            "run_id": run_id,
            DECISION_TAG: decision_rule(cfg.train.operating_point),
            "tta": cfg.model.tta,
        },
    )


def register_variants(
    cfg: JobConfig, reports: list[VariantReport], data: PreparedData, *, tags: dict[str, str]
) -> list[str]:
    """Log each variant's check to the active run and register the accepted ones as
    `<model>-<kind>`; returns one line per variant for the summary."""
    import mlflow

    notes = []
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
                f"{report.kind}: not registered, it loses {report.drop_points:.2f} points "
                f"(> export.max_accuracy_drop {cfg.export.max_accuracy_drop:g})"
            )
            continue
        reg = register_onnx(
            report.path,
            data.images["test"][:2].numpy(),
            name=f"{cfg.tracking.registered_model}-{report.kind}",
            alias=cfg.tracking.alias,
            correct=report.correct,
            total=report.total,
            tags={**tags, "test_accuracy_fp32": f"{report.reference_accuracy:.6f}", "variant": report.kind},
            artifact=f"model-{report.kind}",
        )
        notes.append(
            f"{report.kind}: {report.path} registered as models:/{reg.name}/{reg.version} "
            f"({report.accuracy:.4f} test accuracy, {-report.drop_points:+.2f} points, "
            f"{report.speedup_batch1:.2f}x at batch 1 on this CPU)"
        )
    return notes
