from __future__ import annotations

import mlflow
import pytest

from pipeline.tracking import ensure_experiment, tracked_run, use_store


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
