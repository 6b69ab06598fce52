"""`pipeline run --resume`: find the interrupted run of the same config and its trials in MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError


@dataclass(frozen=True)
class ResumePoint:
    """The interrupted parent run (None: a fresh job) and its trial runs by run name."""

    run: Any = None
    children: dict[str, Any] = field(default_factory=dict)


def resume_point(
    experiment_id: str, job: str, config_hash: str, data_hash: str, echo: Callable[[str], None]
) -> ResumePoint:
    """The last interrupted run of this job and config, checked to be resumable on this data.

    Raises:
        UserError: there is none, it finished, or the data changed since.
    """
    earlier = interrupted_run(experiment_id, job, config_hash)
    children = child_runs(experiment_id, earlier.info.run_id)
    held = earlier.data.tags.get("data_hash")
    if held != data_hash:
        raise UserError(
            f"--resume: the data changed since run {earlier.info.run_id} (data hash {held} -> {data_hash}); "
            "its trials are not comparable with new ones: run without --resume"
        )
    if earlier.info.status == "RUNNING":
        echo(
            f"  warning: run {earlier.info.run_id} is marked RUNNING (killed without a chance to end it?); "
            "make sure no other process still runs it"
        )
    finished = sum(r.info.status == "FINISHED" for r in children.values())
    echo(f"  resuming run {earlier.info.run_id} ({earlier.info.status}): {finished} finished trial(s) kept")
    return ResumePoint(earlier, children)


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
            f"--resume: no earlier run of job {job!r} with this exact config in the store; "
            "run without --resume"
        )
    last = parents[0]
    if last.info.status not in ("KILLED", "FAILED", "RUNNING"):
        raise UserError(
            f"--resume: the last run of job {job!r} with this config ({last.info.run_id}) "
            f"{last.info.status.lower()}; nothing to resume"
        )
    return last


def child_runs(experiment_id: str, parent_id: str) -> dict[str, Any]:
    """The trial runs of a parent run, by run name."""
    import mlflow

    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return {r.info.run_name: r for r in runs}
