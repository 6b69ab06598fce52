"""Figures people look at in MLflow: confusion matrices, learning curves, example inputs, comparisons.

Every function returns a matplotlib Figure (Agg backend, no display needed); callers save or log it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render and close the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Counts, with each row's share of its true class as the colour."""
    counts = np.asarray(matrix)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    return fig


def learning_curves_figure(histories: Mapping[str, Sequence[Mapping[str, float]]], title: str) -> Figure:
    """Loss (train and val) and validation accuracy per epoch, one line per label."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (label, history) in enumerate(histories.items()):
        epochs = np.arange(1, len(history) + 1)
        colour = f"C{i}"
        ax_loss.plot(epochs, [h["train_loss"] for h in history], "--", color=colour, label=f"{label} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "-", color=colour, label=f"{label} val")
        ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "-o", color=colour, ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy", ylim=(0, 1.02))
    ax_loss.legend(fontsize=7)
    ax_acc.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def examples_figure(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    duration_s: float | None,
    row_frequencies: np.ndarray | None,
    kind: str,
) -> Figure:
    """One network input per class; signal images get time (s) and frequency (Hz) axes.

    Args:
        images: 2-D time-frequency maps (rows = increasing frequency) or (H, W, 3) pictures in [0, 1].
        labels: class names.
        duration_s: window length in seconds (x axis), None for pictures.
        row_frequencies: centre frequency in Hz of each row, None for pictures.
        kind: transform name for the title.
    """
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.0), squeeze=False)
    for ax, image, label in zip(axes[0], images, labels):
        ax.set_title(label, fontsize=10)
        if row_frequencies is None or duration_s is None:
            ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
            ax.axis("off")
            continue
        rows = len(row_frequencies)
        ticks = np.linspace(0, rows - 1, 5).round().astype(int)
        ax.imshow(
            image, origin="lower", aspect="auto", cmap="magma", extent=(0, duration_s, -0.5, rows - 0.5)
        )
        ax.set_yticks(ticks, [f"{row_frequencies[t]:.0f}" for t in ticks])
        ax.set_xlabel("time (s)")
    if row_frequencies is not None:
        axes[0][0].set_ylabel("frequency (Hz)")
    fig.suptitle(f"example {kind} inputs, one per class")
    fig.tight_layout()
    return fig


def bar_figure(
    groups: Sequence[str], means: Sequence[float], stds: Sequence[float], *, ylabel: str, title: str
) -> Figure:
    """One bar per group at its mean, with a std error bar and the mean written above.

    The y axis is fixed to 0-1.1: made for accuracies and scores.
    """
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 1.3 * len(groups)), 3.6))
    colours = [f"C{i}" for i in range(len(groups))]
    bars = ax.bar(groups, means, yerr=stds, capsize=5, color=colours)
    for bar, mean, std in zip(bars, means, stds):
        ax.text(bar.get_x() + bar.get_width() / 2, mean + std + 0.03, f"{mean:.3f}", ha="center", fontsize=9)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1.1))
    fig.tight_layout()
    return fig


def sweep_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], *, title: str
) -> Figure:
    """Test accuracy against the fraction of training data, one line (mean +- std) per strategy."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (label, (fractions, means, stds)) in enumerate(curves.items()):
        ax.errorbar(fractions, means, yerr=stds, marker="o", capsize=4, color=f"C{i}", label=label)
    ax.set_xscale("log")
    fractions = sorted({f for fs, _, _ in curves.values() for f in fs})
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set(
        xlabel="fraction of training units (recordings or parts)",
        ylabel="test accuracy",
        title=title,
        ylim=(0, 1.02),
    )
    ax.legend()
    fig.tight_layout()
    return fig


def robustness_figure(rows: Mapping[str, Mapping[str, float]], *, title: str) -> Figure:
    """Test accuracy on the clean and each perturbed test split, one line per strategy."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    names = list(next(iter(rows.values())))
    for i, (label, by_name) in enumerate(rows.items()):
        ax.plot(range(len(names)), [by_name[n] for n in names], "-o", color=f"C{i}", label=label)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set(ylabel="test accuracy", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
