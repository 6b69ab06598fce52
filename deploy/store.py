"""Where the MLflow store is, and the .onnx file behind a registry URI: what serving needs of MLflow.

`pipeline.tracking` (training) adds runs and experiments on top of this module.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.parse
from pathlib import Path

from signal2image.errors import UserError

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
    """True for a store on this machine (SQLite, ``file:`` or a plain path), False for a tracking server."""
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def check_server(uri: str, *, source: str = "the tracking URI", timeout: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI: one GET of the server's ``/health`` with a short timeout, so
    that a server that is not there is said at once (MLflow itself retries for minutes). Any HTTP
    answer counts as there (a proxy may want credentials); local stores are not checked.

    Raises:
        UserError: nothing answers at `uri`; the message names `source`, the URI and the fix.
    """
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # something answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"{source}: no MLflow server answers at {uri!r} ({reason}); start the server "
            "(mlflow server --host HOST --port PORT) or fix the URI (unset: the embedded store ./mlflow.db)"
        ) from None


def quiet_mlflow() -> None:
    """MLflow logs migrations and registry notes at INFO; keep the terminal for our own output."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def use_store(uri: str) -> None:
    """Point MLflow's tracking and registry at `uri` (with `quiet_mlflow`)."""
    import mlflow

    quiet_mlflow()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def check_model_uri(uri: str) -> None:
    """Refuse a model URI that could reach outside the store: a ``..`` path segment anywhere, or an
    absolute artifact path after a ``runs:/`` run id.

    Raises:
        UserError: the message names the URI and the rule.
    """
    rule = (
        "model URIs name artifacts inside the store (models:/NAME@ALIAS, models:/NAME/VERSION, "
        "runs:/RUN_ID/relative/path): no '..' segments and no absolute path after the run id"
    )
    scheme, sep, rest = uri.partition(":")
    if not sep:
        return
    rest = urllib.parse.unquote(rest)  # %2e%2e is .. too
    if ".." in rest.replace("\\", "/").split("/"):
        raise UserError(f"model {uri!r} has a '..' path segment; {rule}")
    if scheme == "runs":
        path = rest.lstrip("/").partition("/")[2]
        if path.startswith("/") or path.startswith("\\") or re.match(r"^[A-Za-z]:", path):
            raise UserError(f"model {uri!r} has an absolute artifact path after the run id; {rule}")


def download_model(uri: str, *, tracking_uri: str | None = None) -> Path:
    """The .onnx file behind a ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) URI, downloaded
    locally (with the raw-signal model logged beside it, `deploy.signal_model.signal_model_path`).

    Raises:
        UserError: the URI could reach outside the store (`check_model_uri`), does not resolve in the
            store, resolves outside the download folder, or holds no .onnx file.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_model_uri(uri)
    store = resolve_tracking_uri(tracking_uri)
    check_server(store)
    use_store(store)
    folder = Path(tempfile.mkdtemp(prefix="pipeline-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    except MlflowException as exc:
        raise UserError(
            f"cannot resolve model {uri!r} in the store {mlflow.get_tracking_uri()}: {exc.message}"
        ) from None
    if not local.resolve().is_relative_to(folder.resolve()):
        raise UserError(
            f"model {uri!r} resolves to {str(local)!r}, outside the download folder {str(folder)!r}; "
            "a model URI must name artifacts inside the store"
        )
    # The model itself, not the raw-signal model logged with it (OnnxInferencer finds that one).
    files = [local] if local.suffix == ".onnx" else sorted(local.rglob("*.onnx"), key=_image_model_first)
    if not files:
        raise UserError(f"model {uri!r} holds no .onnx file (found in {local})")
    return files[0]


def _image_model_first(path: Path) -> tuple[bool, str]:
    return (path.name.endswith(".signal.onnx"), str(path))
