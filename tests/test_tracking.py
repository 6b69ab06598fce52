from __future__ import annotations

import mlflow
import pytest

from pipeline.errors import UserError
from pipeline.tracking import download_model, ensure_experiment, tracked_run, use_store


def test_failed_and_interrupted_runs_keep_their_status_and_data(workdir):
    uri = f"sqlite:///{workdir / 'store.db'}"
    use_store(uri)
    exp = ensure_experiment("t", tracking_uri=uri, artifact_dir=workdir / "art")
    assert ensure_experiment("t", tracking_uri=uri, artifact_dir=workdir / "art") == exp
    ids = {}
    for name, error in (("crash", RuntimeError("boom")), ("ctrl-c", KeyboardInterrupt())):
        with pytest.raises(type(error)):
            with tracked_run(experiment_id=exp, run_name=name) as run:
                ids[name] = run.info.run_id
                mlflow.log_metric("epoch_loss", 0.5, step=0)
                raise error
    with tracked_run(experiment_id=exp, run_name="ok") as run:
        ids["ok"] = run.info.run_id
    client = mlflow.MlflowClient(uri)
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"crash": "FAILED", "ctrl-c": "KILLED", "ok": "FINISHED"}
    assert client.get_run(ids["crash"]).data.metrics["epoch_loss"] == 0.5  # what was logged stays
    assert client.get_experiment(exp).artifact_location == (workdir / "art" / "t").as_uri()


def test_deleted_experiment_is_a_clear_error(workdir):
    from pipeline.errors import UserError

    uri = f"sqlite:///{workdir / 'store.db'}"
    exp = ensure_experiment("gone", tracking_uri=uri, artifact_dir=workdir / "art")
    mlflow.MlflowClient(uri).delete_experiment(exp)
    with pytest.raises(UserError, match="was deleted; restore it"):
        ensure_experiment("gone", tracking_uri=uri, artifact_dir=workdir / "art")


def test_model_uris_cannot_reach_outside_the_store(workdir, monkeypatch):
    uri = f"sqlite:///{workdir / 'store.db'}"
    use_store(uri)
    exp = ensure_experiment("t", tracking_uri=uri, artifact_dir=workdir / "art")
    (workdir / "model.onnx").write_bytes(b"onnx")
    (workdir / "secret.txt").write_text("not for you")
    with tracked_run(experiment_id=exp) as run:
        mlflow.log_artifact(str(workdir / "model.onnx"), "model")
    run_id = run.info.run_id
    assert download_model(f"runs:/{run_id}/model", tracking_uri=uri).read_bytes() == b"onnx"
    depth = "../" * len((workdir / "art").resolve().parts)
    for bad, rule in (
        (f"runs:/{run_id}/{depth}{str(workdir / 'secret.txt').lstrip('/')}", "'..' path segment"),
        (f"runs:/{run_id}/model/%2e%2e/%2e%2e/secret.txt", "'..' path segment"),
        (f"runs:/{run_id}//etc/passwd", "absolute artifact path after the run id"),
    ):
        with pytest.raises(UserError) as info:
            download_model(bad, tracking_uri=uri)
        assert bad in str(info.value) and rule in str(info.value) and "no '..' segments" in str(info.value)
    # and whatever MLflow returns must lie in the download folder
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **kwargs: str(workdir / "secret.txt"))
    with pytest.raises(UserError, match="outside the download folder"):
        download_model(f"runs:/{run_id}/model", tracking_uri=uri)


def test_a_resumed_trial_logs_the_epochs_the_interruption_lost(workdir):
    import mlflow

    from pipeline.trials import log_lost_epochs

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    use_store(uri)
    exp = ensure_experiment("lost", tracking_uri=uri, artifact_dir=workdir / "art")
    rows = [{"val_accuracy": 0.1 * (e + 1), "train_loss": 1.0 / (e + 1)} for e in range(3)]
    with tracked_run(experiment_id=exp, run_name="t") as run:
        mlflow.log_metrics(rows[1], step=1)  # epoch 0's checkpoint was written, its metrics were not
        log_lost_epochs(run.info.run_id, rows)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert {m.step: m.value for m in history}[0] == rows[0]["val_accuracy"]
