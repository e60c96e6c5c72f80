"""The comparison report's figures: curves, per-class F1, confusion matrices, trade-offs, confused pairs."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from keras_cifar.evaluation.metrics import most_confused_pairs
from keras_cifar.evaluation.plots import DPI, _row_shares


def _colours(n):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_curves(groups, path):
    """Validation accuracy and loss (training ones where a run had no validation split), overlaid, against
    training minutes where every run logged its epoch times: equal-budget runs of different speeds then
    compare by what they learnt per minute, which an epoch axis hides. Markers keep one-epoch runs visible."""
    runs = [run for group in groups for run in group.runs]
    by_time = all("epoch_seconds" in run.history for run in runs)
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for colour, group in zip(_colours(len(groups)), groups):
        for i, run in enumerate(group.runs):
            history = run.history
            prefix = "val_" if any(not math.isnan(v) for v in history.get("val_accuracy", [math.nan])) else ""
            x = np.cumsum(history["epoch_seconds"]) / 60 if by_time else [e + 1 for e in history.get("epoch", [])]
            for ax, metric in zip(axes, ("accuracy", "loss")):
                if prefix + metric in history:
                    ax.plot(
                        x,
                        history[prefix + metric],
                        color=colour,
                        alpha=0.85,
                        marker="o",
                        markersize=3,
                        label=group.label if i == 0 else None,
                    )
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("training minutes (epoch ends)" if by_time else "epoch")
        ax.set_ylabel(f"validation {metric} (training where no validation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def plot_f1_heatmap(groups, class_names, path):
    f1 = np.array(
        [
            [np.mean([run.metrics["per_class"][name]["f1"] for run in group.runs]) for name in class_names]
            for group in groups
        ]
    )
    fig = Figure(figsize=(1.0 * len(class_names) + 3, 0.5 * len(groups) + 2))
    ax = fig.add_subplot()
    image = ax.imshow(f1, cmap="viridis", vmin=max(0.0, f1.min() - 0.02), vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(f1):
        ax.text(
            column,
            row,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value < (f1.min() + 1.0) / 2 else "black",
        )
    ax.set_xticks(range(len(class_names)), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(groups)), labels=[g.label for g in groups])
    ax.set_title("per-class F1 on the test set (mean over seeds)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    _save(fig, path)


def summed_confusion(group) -> np.ndarray:
    return np.sum([np.asarray(run.metrics["confusion_matrix"]) for run in group.runs], axis=0)


def plot_confusion_grid(groups, class_names, path):
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    fig = Figure(figsize=(4.6 * columns, 4.4 * rows))
    for i, group in enumerate(groups):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(_row_shares(summed_confusion(group)), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(group.label, fontsize=9)
        ticks = range(len(class_names))
        ax.set_xticks(ticks, labels=class_names, rotation=90, fontsize=6)
        ax.set_yticks(ticks, labels=class_names, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    _save(fig, path)


def plot_tradeoffs(groups, path):
    """Accuracy against parameters and against batch-1 CPU latency, one point per group with its seed spread."""
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    accuracy = lambda r, m: 100 * r.accuracy  # noqa: E731
    for colour, group in zip(_colours(len(groups)), groups):
        y, err = group.mean(accuracy), group.std(accuracy) or 0.0
        for ax, key in zip(axes, ("parameters", "latency_ms")):
            x = group.mean(lambda r, m, key=key: m[key])
            ax.errorbar(x, y, yerr=err, fmt="o", color=colour, capsize=3, label=group.label)
            ax.annotate(group.label.split(" ")[0], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for ax, label in zip(axes, ("parameters", "CPU latency, batch 1 (ms)")):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7)
    _save(fig, path)


def confused_pairs(group, class_names, k=5):
    return most_confused_pairs(summed_confusion(group).tolist(), class_names, k=k)


def plot_confused_pairs(groups, class_names, path, k=5):
    fig = Figure(figsize=(6 * min(2, len(groups)), 2.2 * math.ceil(len(groups) / 2) + 0.6))
    for i, group in enumerate(groups):
        ax = fig.add_subplot(math.ceil(len(groups) / 2), min(2, len(groups)), i + 1)
        top = confused_pairs(group, class_names, k)
        ax.barh(
            [f"{true} → {predicted}" for true, predicted, _ in top][::-1],
            [count for *_, count in top][::-1],
            color="tab:red",
            alpha=0.7,
        )
        ax.set_title(group.label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("test images (all seeds)", fontsize=7)
    _save(fig, path)
