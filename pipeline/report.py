"""The comparison of strategies: one row per trained model, aggregated over seeds per strategy and
data fraction, written as a terminal table, Markdown, CSV and a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.config import JobConfig
    from pipeline.job import JobResult


@dataclass(frozen=True)
class TrialResult:
    """One child run: a strategy trained with one seed on one fraction of the training data."""

    strategy: str
    weights: str
    seed: int
    train_fraction: float
    val_accuracy: float
    val_macro_f1: float
    test_accuracy: float
    test_macro_f1: float
    test_recording_accuracy: float
    best_epoch: int
    train_seconds: float
    run_id: str
    test_correct: int = 0  # exact counts: the registry compares these, not rounded accuracies
    test_total: int = 0
    baseline: bool = False  # a classical baseline (pipeline/baselines.py): compared, never exported
    val_robust: float = 0.0  # mean of clean and perturbed validation accuracy (pipeline/robustness.py)
    class_offset: float = 0.0  # train.operating_point: the offset on that class's logit (0: argmax)
    robust_test: Mapping[str, float] = field(default_factory=dict, repr=False, compare=False)
    history: tuple[Mapping[str, float], ...] = field(default=(), repr=False, compare=False)


CSV_FIELDS = [f for f in TrialResult.__dataclass_fields__ if f not in ("history", "robust_test")]


@dataclass(frozen=True)
class Aggregate:
    """Mean and standard deviation over the seeds of one (strategy, train fraction)."""

    strategy: str
    weights: str
    train_fraction: float
    trials: tuple[TrialResult, ...]

    def stat(self, name: str) -> tuple[float, float]:
        """Mean and sample standard deviation of field `name` over the trials (std 0 for one trial)."""
        values = np.array([getattr(t, name) for t in self.trials], dtype=float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    def cell(self, name: str) -> str:
        """``mean ± std`` of field `name` for the table (the mean alone for one trial)."""
        mean, std = self.stat(name)
        return f"{mean:.3f}" if len(self.trials) == 1 else f"{mean:.3f} ± {std:.3f}"

    def cells(self) -> list[str]:
        """This aggregate's row of the comparison table, in the order of `HEADERS`."""
        return [
            self.strategy,
            self.weights,
            f"{self.train_fraction:g}",
            str(len(self.trials)),
            self.cell("val_accuracy"),
            self.cell("test_accuracy"),
            self.cell("test_macro_f1"),
            self.cell("test_recording_accuracy"),
            self.epochs(),
            f"{self.stat('train_seconds')[0]:.1f} s",
        ]

    def epochs(self) -> str:
        """Epochs each trial ran and (in brackets) its best epoch, 1-based: ``6 (4)``; a range over
        seeds (``5-6 (3-4)``); ``-`` for a baseline."""
        if self.trials[0].baseline:
            return "-"

        def span(values: list[int]) -> str:
            lo, hi = min(values), max(values)
            return f"{lo}" if lo == hi else f"{lo}-{hi}"

        ran = [len(t.history) for t in self.trials]
        best = [t.best_epoch + 1 for t in self.trials]
        return f"{span(ran)} ({span(best)})"


HEADERS = [
    "strategy",
    "weights",
    "train frac",
    "seeds",
    "val acc",
    "test acc",
    "test macro-F1",
    "test acc per recording/part",
    "epochs (best)",
    "train time",
]


def baseline_verdict(trials: Sequence[TrialResult], metric: str = "val_accuracy") -> str | None:
    """One plain sentence when a classical baseline beats every network on validation (`metric`,
    mean over seeds per strategy and train fraction), with both numbers; None otherwise."""
    aggs = [a for a in aggregate(trials) if a.trials]
    baselines = [a for a in aggs if a.trials[0].baseline]
    networks = [a for a in aggs if not a.trials[0].baseline]
    if not baselines or not networks:
        return None
    label = metric.replace("val_", "validation ").replace("_", "-")
    top = max(a.train_fraction for a in aggs)
    baselines = [a for a in baselines if a.train_fraction == top] or baselines
    networks = [a for a in networks if a.train_fraction == top] or networks
    base = max(baselines, key=lambda a: a.stat(metric)[0])
    net = max(networks, key=lambda a: a.stat(metric)[0])
    if base.stat(metric)[0] <= net.stat(metric)[0]:
        return None
    return (
        f"The baseline {base.strategy} beats every network on this data: {label} "
        f"{base.stat(metric)[0]:.3f} against {net.stat(metric)[0]:.3f} for the best network "
        f"({net.strategy}; test accuracy {base.stat('test_accuracy')[0]:.3f} against "
        f"{net.stat('test_accuracy')[0]:.3f}). The exported model is still the best network, but "
        "on this data the networks are not worth their cost."
    )


def robustness_rows(aggregates: Sequence[Aggregate]) -> dict[str, dict[str, float]]:
    """Per strategy (at its largest train fraction): mean test accuracy, clean then per perturbation."""
    rows: dict[str, dict[str, float]] = {}
    top = max((a.train_fraction for a in aggregates), default=1.0)
    for a in aggregates:
        if a.train_fraction != top or not all(t.robust_test for t in a.trials):
            continue
        names = list(a.trials[0].robust_test)
        rows[a.strategy] = {"clean": a.stat("test_accuracy")[0]} | {
            n: float(np.mean([t.robust_test[n] for t in a.trials])) for n in names
        }
    return rows


def selection_note(trials: Sequence[TrialResult], metric: str) -> str | None:
    """When plain validation accuracy and `val_robust` choose different networks, one sentence saying
    which each chooses and which the job exported (by `metric`); None when they agree."""
    networks = [t for t in trials if not t.baseline]
    if not networks or not any(t.robust_test for t in networks):
        return None
    by_acc = max(networks, key=lambda t: t.val_accuracy)
    by_robust = max(networks, key=lambda t: t.val_robust)
    if by_acc is by_robust:
        return None

    def name(t: TrialResult) -> str:
        return f"{t.strategy} (seed {t.seed}, train fraction {t.train_fraction:g})"

    exported = by_robust if metric == "val_robust" else max(networks, key=lambda t: getattr(t, metric))
    return (
        f"Robustness changes the choice: validation accuracy picks {name(by_acc)} "
        f"({by_acc.val_accuracy:.3f}; val_robust {by_acc.val_robust:.3f}), "
        f"val_robust picks {name(by_robust)} "
        f"({by_robust.val_robust:.3f}; validation accuracy {by_robust.val_accuracy:.3f}). "
        f"Exported by {metric}: {name(exported)}."
    )


def aggregate(trials: Sequence[TrialResult]) -> list[Aggregate]:
    """Group by (strategy, train fraction), keeping the order in which they ran."""
    groups: dict[tuple[str, float], list[TrialResult]] = {}
    for t in trials:
        groups.setdefault((t.strategy, t.train_fraction), []).append(t)
    return [Aggregate(s, ts[0].weights, f, tuple(ts)) for (s, f), ts in groups.items()]


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (cells are not escaped)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def trials_csv(trials: Sequence[TrialResult]) -> str:
    """One CSV row per trial with every field of `TrialResult` but its history."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for t in trials:
        writer.writerow({f: getattr(t, f) for f in CSV_FIELDS})
    return out.getvalue()


def markdown_report(
    title: str,
    aggregates: Sequence[Aggregate],
    figures: Sequence[str],
    notes: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> str:
    """The comparison as Markdown; `figures` are artifact file names shown as images; `sections`
    (Markdown) follow the notes."""
    parts = [f"# {title}\n", markdown_table(HEADERS, [a.cells() for a in aggregates])]
    parts += [f"{n}\n" for n in notes]
    parts += list(sections)
    parts += [f"![{name}]({name})\n" for name in figures]
    return "\n".join(parts)


def robustness_table(rows: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the robustness table: a strategy per row, clean and perturbed test accuracy."""
    names = list(next(iter(rows.values())))
    return ["strategy", *names], [[s, *(f"{v[n]:.3f}" for n in names)] for s, v in rows.items()]


def html_table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f"<h2>{html.escape(caption)}</h2>"
        f"<table class='robustness'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _figure_html(name: str, png: bytes) -> str:
    return (
        f'<figure><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
    )


def html_report(
    title: str,
    aggregates: Sequence[Aggregate],
    figures: Mapping[str, bytes],
    notes: Sequence[str] = (),
    side_by_side: Mapping[str, bytes] | None = None,
    side_by_side_title: str = "",
    sections: str = "",
) -> str:
    """A self-contained page: the table, then the `side_by_side` figures in one row (the best trial's
    confusion matrix and per-class maps) under their heading, then every other figure, each
    embedded as a PNG data URI."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in a.cells()) + "</tr>" for a in aggregates
    )
    images = "".join(_figure_html(name, png) for name, png in figures.items())
    if side_by_side:
        row = "".join(_figure_html(name, png) for name, png in side_by_side.items())
        images = (
            f"<h2>{html.escape(side_by_side_title)}</h2><div class='side'>{row}</div>"
            if side_by_side_title
            else f"<div class='side'>{row}</div>"
        ) + images
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1.5em 0}"
        ".side{display:flex;gap:1em;align-items:flex-start}.side figure{flex:1 1 auto;margin:0.5em 0}"
        f"</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes_html}{sections}{images}"
        "</body></html>"
    )


# ----------------------------------------------------------------------------- the report stage


def log_comparison(
    cfg: JobConfig, trials: list[TrialResult], logged: dict[str, bytes], best: TrialResult | None = None
) -> None:
    """The comparison on the parent run: CSV of every trial, Markdown and HTML reports with figures.

    `logged` holds figures already logged (by name) that the reports show too. With `best`, its
    confusion matrix and per-class explanation maps (from its child run) are copied to the parent
    run and shown side by side.
    """
    import mlflow

    from pipeline.plots import bar_figure, learning_curves_figure, robustness_figure, sweep_figure, to_png
    from pipeline.tracking import log_png

    aggs = aggregate(trials)
    top = max(cfg.train.train_fraction)
    at_top = [a for a in aggs if a.train_fraction == top]
    figures = {
        "accuracy_by_strategy.png": to_png(
            bar_figure(
                [a.strategy for a in at_top],
                [a.stat("test_accuracy")[0] for a in at_top],
                [a.stat("test_accuracy")[1] for a in at_top],
                ylabel="test accuracy",
                title=f"test accuracy ({len(cfg.train.seeds)} seed(s), train fraction {top:g})",
            )
        ),
        "learning_curves.png": to_png(
            learning_curves_figure(
                {a.strategy: mean_history(a.trials) for a in at_top if not a.trials[0].baseline},
                "validation per epoch (mean over seeds)",
            )
        ),
    }
    if len(cfg.train.train_fraction) > 1:
        curves = {}
        for strategy in dict.fromkeys(a.strategy for a in aggs):
            mine = sorted((a for a in aggs if a.strategy == strategy), key=lambda a: a.train_fraction)
            curves[strategy] = (
                [a.train_fraction for a in mine],
                [a.stat("test_accuracy")[0] for a in mine],
                [a.stat("test_accuracy")[1] for a in mine],
            )
        figures["data_size_sweep.png"] = to_png(sweep_figure(curves, title="test accuracy vs training data"))
    robust = robustness_rows(aggs)
    if robust:
        figures["robustness.png"] = to_png(
            robustness_figure(robust, title="test accuracy under noise, shifts and gain changes")
        )
    for name, png in figures.items():
        log_png(png, name)
    figures.update(logged)
    title = f"{cfg.name}: {cfg.model.backbone}, {cfg.transform.kind} {cfg.transform.image_size} px"
    notes = [
        f"Mean ± standard deviation over seeds {list(cfg.train.seeds)}; test = held-out recordings; "
        f"model chosen by {cfg.train.select_metric} among the networks (weights 'baseline': classical "
        "baselines on the same split, C chosen on validation, never exported)."
    ]
    verdict = baseline_verdict(trials, cfg.train.select_metric)
    if verdict:
        notes.append(verdict)
    choice = selection_note(trials, cfg.train.select_metric)
    if choice:
        notes.append(choice)
    robust_table = robustness_table(robust) if robust else None
    side = best_trial_figures(best) if best is not None else {}
    for name, png in side.items():
        log_png(png, name)
    side_title = (
        f"Best trial ({best.strategy}, seed {best.seed}, train fraction {best.train_fraction:g}): test "
        "confusion matrix and mean Grad-CAM per class over its correctly classified test samples"
        if best is not None
        else ""
    )
    md_sections: list[str] = []
    html_sections = ""
    if robust_table is not None:
        headers, rows = robust_table
        caption = "Robustness: test accuracy with noise, time shifts and gain changes"
        md_sections.append(f"## {caption}\n\n{markdown_table(headers, rows)}")
        html_sections = html_table(caption, headers, rows)
        mlflow.log_text(markdown_table(headers, rows), "robustness.md")
    mlflow.log_text(markdown_report(title, aggs, [*side, *figures], notes, md_sections), "report.md")
    page = html_report(title, aggs, figures, notes, side, side_title, html_sections)
    mlflow.log_text(page, "report.html")
    mlflow.log_text(trials_csv(trials), "comparison.csv")


BEST_FIGURES = {  # the best trial's artifact -> its name on the parent run
    "confusion_matrix.png": "best_confusion_matrix.png",
    "explain/classes.png": "best_explanations.png",
}


def best_trial_figures(best: TrialResult) -> dict[str, bytes]:
    """The best trial's confusion matrix and per-class explanation maps, as logged in its child run
    (those it does not have, e.g. with `train.explain: false`, are left out)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    out: dict[str, bytes] = {}
    for artifact, name in BEST_FIGURES.items():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=best.run_id, artifact_path=artifact, dst_path=tmp
                )
                out[name] = Path(local).read_bytes()
        except (MlflowException, OSError):
            continue
    return out


def mean_history(trials: tuple[TrialResult, ...]) -> list[dict[str, float]]:
    """Per epoch up to the longest trial, the mean of train loss, val loss and val accuracy over the
    trials that ran that epoch (early stopping ends seeds at different epochs)."""
    keys = ("train_loss", "val_loss", "val_accuracy")
    longest = max((len(t.history) for t in trials), default=0)
    return [
        {k: float(np.mean([t.history[e][k] for t in trials if e < len(t.history)])) for k in keys}
        for e in range(longest)
    ]


def summary(result: JobResult) -> str:
    """What the user reads at the end of `pipeline run`."""
    from pipeline.tracking import is_local_store

    reg = result.registration
    lines = ["", text_table(HEADERS, [a.cells() for a in result.aggregates]), ""]
    best = result.best
    robust = robustness_rows(result.aggregates)
    if robust:
        headers, rows = robustness_table(robust)
        lines += [
            "robustness: test accuracy with noise, time shifts and gain changes",
            text_table(headers, rows),
            "",
        ]
    for note in (
        baseline_verdict(result.trials, result.select_metric),
        selection_note(result.trials, result.select_metric),
    ):
        if note:
            lines += [note, ""]
    lines.append(f"best model:    {best.strategy} (train fraction {best.train_fraction:g}, seed {best.seed})")
    lines.append(f"ONNX model:    {result.onnx_path}")
    lines.append(f"               {result.parity}")
    lines.append(
        f"registered:    models:/{reg.name}/{reg.version}, alias '{reg.alias}' -> version {reg.version} "
        f"({reg.uri})"
    )
    lines.append(f"               {reg.reason}")
    for note in result.export_notes:
        lines.append(f"export:        {note}")
    if is_local_store(result.tracking_uri):
        lines.append(
            f"MLflow UI:     pipeline ui    (= mlflow ui --backend-store-uri {result.tracking_uri} "
            "--host 127.0.0.1 --port 5000)"
        )
    else:
        lines.append(f"MLflow UI:     {result.tracking_uri}")
    lines.append(
        f"predict:       pipeline predict --model {reg.uri} {'IMAGE.png' if result.is_image else 'FILE.npy'}"
    )
    return "\n".join(lines)
