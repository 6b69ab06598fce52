from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

import mlflow
import pytest

from pipeline.errors import UserError
from pipeline.registry import decide_alias, promote
from pipeline.report import Aggregate, TrialResult, aggregate, html_report, markdown_report
from tests.conftest import trial_result


def _version(client, name, tags, data_hash, tmp_path):
    source = tmp_path / f"v{sorted(tags.items())}-{data_hash}"
    source.mkdir(exist_ok=True)
    mv = client.create_model_version(name, source.as_uri())
    for key, value in {**tags, "data_hash": data_hash}.items():
        client.set_model_version_tag(name, mv.version, key, value)
    return str(mv.version)


def test_champion_moves_only_on_improvement_on_the_same_data(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'reg.db'}")
    client.create_registered_model("m")
    steps = [
        (70, "aaa", "champion"),
        (70, "aaa", "challenger"),
        (65, "aaa", "challenger"),
        (80, "aaa", "champion"),
        (99, "bbb", "challenger"),
    ]
    for correct, data_hash, expected in steps:
        tags = {"test_correct": str(correct), "test_total": "100", "test_accuracy": f"{correct / 100:.6f}"}
        version = _version(client, "m", tags, data_hash, tmp_path)
        alias, reason = decide_alias(client, "m", version, correct, 100, data_hash, "champion")
        assert alias == expected, (correct, data_hash, reason)
        client.set_registered_model_alias("m", alias, version)
    assert str(client.get_model_version_by_alias("m", "champion").version) == "4"
    assert "other data" in decide_alias(client, "m", "5", 99, 100, "bbb", "champion")[1]
    # The same data hash but another test size: not comparable either.
    assert decide_alias(client, "m", "5", 99, 200, "aaa", "champion")[0] == "challenger"
    # A person decides for other data: promote the challenger, which then stops being one.
    assert promote(client, "m", "5", "champion") == "models:/m@champion -> version 5 (was version 4)"
    assert {k: str(v) for k, v in client.get_registered_model("m").aliases.items()} == {"champion": "5"}
    with pytest.raises(UserError, match="no version '42'"):
        promote(client, "m", "42", "champion")


def test_a_version_deciding_by_another_rule_never_takes_the_alias_by_count(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'reg.db'}")
    client.create_registered_model("m")
    held = _version(client, "m", {"test_correct": "80", "test_total": "100"}, "aaa", tmp_path)
    client.set_registered_model_alias("m", "champion", held)  # no decision tag: an argmax version
    rule = "recall of 'defective' >= 0.8"
    alias, reason = decide_alias(client, "m", "2", 95, 100, "aaa", "champion", rule)
    assert alias == "challenger" and "decides by argmax" in reason and rule in reason
    assert decide_alias(client, "m", "2", 95, 100, "aaa", "champion", "argmax")[0] == "champion"
    client.set_model_version_tag("m", held, "decision", rule)
    assert decide_alias(client, "m", "2", 95, 100, "aaa", "champion", rule)[0] == "champion"


def test_a_holder_with_only_the_rounded_accuracy_tag_is_compared_by_recovered_count(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'reg.db'}")
    client.create_registered_model("m")
    # Registered by an older version of the pipeline: only f"{251 / 330:.6f}" = 0.760606, no counts.
    legacy = _version(client, "m", {"test_accuracy": f"{251 / 330:.6f}"}, "aaa", tmp_path)
    client.set_registered_model_alias("m", "champion", legacy)
    assert decide_alias(client, "m", "2", 251, 330, "aaa", "champion")[0] == "challenger"
    alias, reason = decide_alias(client, "m", "2", 252, 330, "aaa", "champion")
    assert alias == "champion" and "version 1's 251/330" in reason
    no_score = _version(client, "m", {}, "aaa", tmp_path)
    client.set_registered_model_alias("m", "champion", no_score)
    assert decide_alias(client, "m", "3", 330, 330, "aaa", "champion")[0] == "challenger"


def _trial(strategy, seed, acc, fraction=1.0):
    return TrialResult(
        strategy,
        "imagenet" if strategy != "scratch" else "random",
        seed,
        fraction,
        acc,
        acc,
        acc,
        acc,
        acc,
        0,
        1.0,
        f"r{seed}",
    )


def test_aggregates_and_reports():
    trials = [_trial("scratch", s, a) for s, a in enumerate((0.6, 0.7, 0.8))] + [
        _trial("finetune", s, 0.9) for s in range(3)
    ]
    aggs = aggregate(trials)
    assert [a.strategy for a in aggs] == ["scratch", "finetune"]
    mean, std = aggs[0].stat("test_accuracy")
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.1)
    assert aggs[0].cells()[5] == "0.700 ± 0.100" and aggs[1].cells()[5] == "0.900 ± 0.000"
    # epochs run and the best epoch (1-based), a range over seeds when early stopping differs
    ran = dataclasses.replace(trials[0], history=({},) * 6, best_epoch=3)
    stopped = dataclasses.replace(trials[1], history=({},) * 5, best_epoch=2)
    assert Aggregate("scratch", "random", 1.0, (ran,)).epochs() == "6 (4)"
    assert Aggregate("scratch", "random", 1.0, (ran, stopped)).cells()[8] == "5-6 (3-4)"
    md = markdown_report("job", aggs, ["a.png"])
    assert "| scratch | random | 1 | 3 |" in md and "![a.png](a.png)" in md

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.images = [], []

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            if tag == "img":
                self.images.append(dict(attrs)["src"])

        def handle_data(self, data):
            if self.rows and self.lasttag in ("td", "th"):
                self.rows[-1].append(data)

    page = Cells()
    page.feed(html_report("job <1>", aggs, {"a.png": b"\x89PNG fake"}))
    assert page.rows[0][0] == "strategy" and [r[0] for r in page.rows[1:]] == ["scratch", "finetune"]
    assert page.rows[1][5] == "0.700 ± 0.100"
    assert page.images == ["data:image/png;base64,iVBORyBmYWtl"]


def _tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("Identity", ["flat"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_identical_rerun_does_not_take_champion_but_one_more_correct_sample_does(tmp_path, monkeypatch):
    import numpy as np

    from pipeline.registry import register_onnx

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'reg.db'}")
    mlflow.set_experiment("champion")
    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    example = np.zeros((2, 1, 2, 2), dtype=np.float32)
    client = mlflow.MlflowClient()
    # 251/330 rounded to 6 decimals (0.760606) is below 251/330 itself: the old comparison let a re-run win.
    steps = [
        (251, "champion", "1"),
        (251, "challenger", "1"),
        (250, "challenger", "1"),
        (252, "champion", "4"),
    ]
    try:
        for correct, expected, champion in steps:
            with mlflow.start_run():
                reg = register_onnx(
                    onnx_path,
                    example,
                    name="m",
                    alias="champion",
                    tags={"data_hash": "aaa"},
                    correct=correct,
                    total=330,
                )
            assert reg.alias == expected, (correct, reg.reason)
            assert str(client.get_model_version_by_alias("m", "champion").version) == champion
            tags = client.get_model_version("m", reg.version).tags
            assert (tags["test_correct"], tags["test_total"]) == (str(correct), "330")
            assert float(tags["test_accuracy"]) == pytest.approx(correct / 330, abs=1e-6)
        assert "251/330" in reg.reason and "252/330" in reg.reason
    finally:
        mlflow.set_tracking_uri(None)


def test_mean_history_spans_seeds_that_early_stopping_ended_at_different_epochs():
    from pipeline.report import mean_history

    def row(v: float) -> dict[str, float]:
        return {"train_loss": v, "val_loss": v, "val_accuracy": v}

    short = trial_result("s", 0.5, history=(row(1.0), row(2.0)))
    long = trial_result("s", 0.5, seed=1, history=(row(3.0), row(4.0), row(5.0)))
    curve = mean_history((short, long))  # the first seed stopped earlier than the second
    assert [r["val_accuracy"] for r in curve] == [2.0, 3.0, 5.0]
    assert mean_history((long, short)) == curve
