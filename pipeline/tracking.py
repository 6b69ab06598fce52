"""MLflow: where the store is, runs that end with the right status, and registry look-ups."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy.store import (  # the serving side resolves models:/ URIs too
    DEFAULT_DB,
    check_server,
    download_model,
    is_local_store,
    quiet_mlflow,
    resolve_tracking_uri,
    use_store,
)
from pipeline.errors import UserError

__all__ = [
    "DEFAULT_DB",
    "check_server",
    "download_model",
    "ensure_experiment",
    "is_local_store",
    "log_png",
    "quiet_mlflow",
    "resolve_tracking_uri",
    "runs_started",
    "tracked_run",
    "use_store",
]


def ensure_experiment(name: str, *, tracking_uri: str, artifact_dir: Path) -> str:
    """Id of experiment `name`, created on first use (local stores keep artifacts in `artifact_dir`)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise UserError(
                f"MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore "
                "--experiment-id "
                f"{found.experiment_id}) or set another tracking.experiment"
            )
        return found.experiment_id
    location = None
    if is_local_store(tracking_uri):
        location = (artifact_dir.resolve() / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


_started: list[str] = []  # ids of the runs `tracked_run` started in this process


def runs_started() -> int:
    """How many MLflow runs `tracked_run` started in this process (Ctrl-C marks those in progress KILLED)."""
    return len(_started)


@contextmanager
def tracked_run(**kwargs: Any) -> Iterator[Any]:
    """`mlflow.start_run` that ends FAILED on an error and KILLED on Ctrl-C (what was logged stays)."""
    import mlflow

    run = mlflow.start_run(**kwargs)
    _started.append(run.info.run_id)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_png(png: bytes, name: str) -> None:
    """Log PNG bytes as artifact `name` of the active run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(png)
        mlflow.log_artifact(str(path))
