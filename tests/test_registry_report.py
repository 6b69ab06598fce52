from __future__ import annotations

from html.parser import HTMLParser

import mlflow
import pytest

from pipeline.errors import UserError
from pipeline.registry import decide_alias, promote
from pipeline.report import TrialResult, aggregate, html_report, markdown_report


def _version(client, name, score, data_hash, tmp_path):
    source = tmp_path / f"v{score}-{data_hash}"
    source.mkdir(exist_ok=True)
    mv = client.create_model_version(name, source.as_uri())
    client.set_model_version_tag(name, mv.version, "test_accuracy", str(score))
    client.set_model_version_tag(name, mv.version, "data_hash", data_hash)
    return str(mv.version)


def test_champion_moves_only_on_improvement_on_the_same_data(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'reg.db'}")
    client.create_registered_model("m")
    steps = [
        (0.70, "aaa", "champion"),
        (0.70, "aaa", "challenger"),
        (0.65, "aaa", "challenger"),
        (0.80, "aaa", "champion"),
        (0.99, "bbb", "challenger"),
    ]
    for score, data_hash, expected in steps:
        version = _version(client, "m", score, data_hash, tmp_path)
        alias, reason = decide_alias(client, "m", version, score, data_hash, "champion")
        assert alias == expected, (score, data_hash, reason)
        client.set_registered_model_alias("m", alias, version)
    assert str(client.get_model_version_by_alias("m", "champion").version) == "4"
    assert "other data" in decide_alias(client, "m", "5", 0.99, "bbb", "champion")[1]
    # A person decides for other data: promote the challenger, which then stops being one.
    assert promote(client, "m", "5", "champion") == "models:/m@champion -> version 5 (was version 4)"
    assert {k: str(v) for k, v in client.get_registered_model("m").aliases.items()} == {"champion": "5"}
    with pytest.raises(UserError, match="no version '42'"):
        promote(client, "m", "42", "champion")


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
