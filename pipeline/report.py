"""The comparison of strategies: one row per trained model, aggregated over seeds per strategy and
data fraction, written as a terminal table, Markdown, CSV and a self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


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
    history: tuple[Mapping[str, float], ...] = field(default=(), repr=False, compare=False)


CSV_FIELDS = [f for f in TrialResult.__dataclass_fields__ if f != "history"]


@dataclass(frozen=True)
class Aggregate:
    """Mean and standard deviation over the seeds of one (strategy, train fraction)."""

    strategy: str
    weights: str
    train_fraction: float
    trials: tuple[TrialResult, ...]

    def stat(self, name: str) -> tuple[float, float]:
        values = np.array([getattr(t, name) for t in self.trials], dtype=float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    def cell(self, name: str) -> str:
        mean, std = self.stat(name)
        return f"{mean:.3f}" if len(self.trials) == 1 else f"{mean:.3f} ± {std:.3f}"

    def cells(self) -> list[str]:
        return [
            self.strategy,
            self.weights,
            f"{self.train_fraction:g}",
            str(len(self.trials)),
            self.cell("val_accuracy"),
            self.cell("test_accuracy"),
            self.cell("test_macro_f1"),
            self.cell("test_recording_accuracy"),
            f"{self.stat('train_seconds')[0]:.1f} s",
        ]


HEADERS = [
    "strategy",
    "weights",
    "train frac",
    "seeds",
    "val acc",
    "test acc",
    "test macro-F1",
    "test acc per recording/part",
    "train time",
]


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
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def trials_csv(trials: Sequence[TrialResult]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for t in trials:
        writer.writerow({f: getattr(t, f) for f in CSV_FIELDS})
    return out.getvalue()


def markdown_report(
    title: str, aggregates: Sequence[Aggregate], figures: Sequence[str], notes: Sequence[str] = ()
) -> str:
    """The comparison as Markdown; `figures` are artifact file names shown as images."""
    parts = [f"# {title}\n", markdown_table(HEADERS, [a.cells() for a in aggregates])]
    parts += [f"{n}\n" for n in notes]
    parts += [f"![{name}]({name})\n" for name in figures]
    return "\n".join(parts)


def html_report(
    title: str, aggregates: Sequence[Aggregate], figures: Mapping[str, bytes], notes: Sequence[str] = ()
) -> str:
    """A self-contained page: the table, then every figure embedded as a PNG data URI."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in a.cells()) + "</tr>" for a in aggregates
    )
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in figures.items()
    )
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1.5em 0}"
        f"</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes_html}{images}</body></html>"
    )
