"""MLflow: where the store is, runs that end with the right status, and registry look-ups."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """The config's `tracking.uri`, else $MLFLOW_TRACKING_URI, else the embedded SQLite file ./mlflow.db."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def quiet_mlflow() -> None:
    """MLflow logs migrations and registry notes at INFO; keep the terminal for our own output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def use_store(uri: str) -> None:
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def ensure_experiment(name: str, *, tracking_uri: str, artifact_dir: Path) -> str:
    """Id of experiment `name`, created on first use (local stores keep artifacts in `artifact_dir`)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise UserError(
                f"MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore --experiment-id "
                f"{found.experiment_id}) or set another tracking.experiment"
            )
        return found.experiment_id
    location = None
    if is_local_store(tracking_uri):
        location = (artifact_dir.resolve() / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


@contextmanager
def tracked_run(**kwargs: Any) -> Iterator[Any]:
    """`mlflow.start_run` that ends FAILED on an error and KILLED on Ctrl-C (what was logged stays)."""
    import mlflow

    run = mlflow.start_run(**kwargs)
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


def download_model(uri: str, *, tracking_uri: str | None = None) -> Path:
    """The .onnx file behind a ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) URI, downloaded locally."""
    import mlflow
    from mlflow.exceptions import MlflowException

    use_store(resolve_tracking_uri(tracking_uri))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise UserError(
            f"cannot resolve model {uri!r} in the store {mlflow.get_tracking_uri()}: {exc.message}"
        ) from None
    files = [local] if local.suffix == ".onnx" else sorted(local.rglob("*.onnx"))
    if not files:
        raise UserError(f"model {uri!r} holds no .onnx file (found in {local})")
    return files[0]
