"""The comparison of strategies, as a terminal table, Markdown and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StrategyRow:
    strategy: str
    weights: str
    val_accuracy: float
    val_macro_f1: float
    test_accuracy: float
    test_macro_f1: float
    test_recording_accuracy: float
    best_epoch: int
    train_seconds: float
    run_id: str

    def cells(self) -> list[str]:
        return [
            self.strategy,
            self.weights,
            f"{self.val_accuracy:.3f}",
            f"{self.test_accuracy:.3f}",
            f"{self.test_macro_f1:.3f}",
            f"{self.test_recording_accuracy:.3f}",
            str(self.best_epoch + 1),
            f"{self.train_seconds:.1f} s",
        ]


HEADERS = ["strategy", "weights", "val acc", "test acc", "test macro-F1", "test acc (recordings)", "best epoch", "train time"]


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def comparison_csv(rows: Sequence[StrategyRow]) -> str:
    out = io.StringIO()
    fields = list(StrategyRow.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({f: getattr(row, f) for f in fields})
    return out.getvalue()
