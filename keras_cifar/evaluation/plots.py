"""PNG figures of a confusion matrix, a training run, a reliability diagram and a gallery of mistakes.

Built on matplotlib's object-oriented `Figure` API, which renders with Agg and never touches pyplot's
global state, so plotting works on a headless machine and leaks no figures in a long process.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_cifar.errors import KerasCifarError
from keras_cifar.run import read_history

DPI = 150
LEARNING_RATE_COLUMNS = ("learning_rate", "lr")  # Keras 3 logs the first, Keras 2 the second.


def plot_confusion_matrix(confusion, class_names, path, title="Confusion matrix (test set)"):
    """Saves the confusion matrix as a PNG, coloured by the share of each true class (its recall).

    Colouring by row rather than by count keeps the picture right when classes have unequal support.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    shares = _row_shares(counts)
    size = max(6.0, 0.65 * len(class_names) + 2.5)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("share of true class")
    _write_counts(ax, counts, shares)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    _save(fig, path)


def plot_reliability(calibration, path, title="Reliability (test set)"):
    """Accuracy against confidence per bin, beside the diagonal a calibrated model would follow; the bars' gap
    to it is what the ECE averages."""
    bins = [b for b in calibration["bins"] if b["count"]]
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 0.1
    ax.bar(
        [b["lower"] for b in bins],
        [b["accuracy"] for b in bins],
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="white",
        label="accuracy in bin",
    )
    ax.bar(
        [b["lower"] for b in bins],
        [b["confidence"] - b["accuracy"] for b in bins],
        bottom=[b["accuracy"] for b in bins],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.35,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(
        f"{title}\nECE {100 * calibration['ece']:.2f} %, mean confidence {100 * calibration['mean_confidence']:.1f} %"
    )
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_mistakes(images, mistakes, path, title="Most confident mistakes (test set)"):
    """The images the model got wrong with the highest confidence, each with its true and predicted label."""
    columns = 4
    rows = max(1, math.ceil(len(mistakes) / columns))
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows + 0.4))
    for i in range(rows * columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.axis("off")
        if i < len(mistakes):
            m = mistakes[i]
            ax.imshow(images[m["index"]], interpolation="nearest")
            ax.set_title(f"{m['true']} → {m['predicted']}\n{100 * m['confidence']:.0f} % (#{m['index']})", fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def _row_shares(counts):
    """Each row divided by its total; a row with no samples stays zero instead of dividing by zero."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def _write_counts(ax, counts, shares):
    """Writes each count in its cell, white on dark cells so it stays readable."""
    font_size = 9 if len(counts) <= 10 else 7
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if shares[row, column] > 0.5 else "black"
        ax.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=font_size)


def plot_training_curves(history_csv, path, title=None):
    """Saves loss, accuracy and (if logged) learning rate against epoch from a Keras CSVLogger file.

    Plots whichever of the usual columns the file has, so it serves runs without validation data too.
    """
    history = read_history(history_csv)
    epochs = _epochs(history)
    candidates = (_loss_panel(history), _accuracy_panel(history, epochs), _learning_rate_panel(history))
    panels = [panel for panel in candidates if panel[1]]
    if not panels:
        raise KerasCifarError(
            f"Training log {history_csv} has no loss, accuracy or learning-rate column to plot; "
            f"its columns are: {', '.join(history)}"
        )
    fig = Figure(figsize=(5.0 * len(panels), 4.2))
    for index, (label, lines) in enumerate(panels, start=1):
        _draw_panel(fig.add_subplot(1, len(panels), index), epochs, label, lines)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _epochs(history):
    """1-based epoch numbers: CSVLogger counts from 0, people count from 1."""
    if "epoch" in history:
        return [int(epoch) + 1 for epoch in history["epoch"]]
    return list(range(1, len(next(iter(history.values()))) + 1))


# A panel is (y-axis label, [(legend label or None, values), ...]); one with no lines is left out.


def _loss_panel(history):
    columns = (("loss", "train"), ("val_loss", "validation"))
    return "loss", [(label, history[column]) for column, label in columns if column in history]


def _accuracy_panel(history, epochs):
    lines = []
    if "accuracy" in history:
        lines.append(("train", _percent(history["accuracy"])))
    if "val_accuracy" in history:
        values = _percent(history["val_accuracy"])
        lines.append((_validation_label(values, epochs), values))
    return "accuracy (%)", lines


def _percent(values):
    return [100 * value for value in values]


def _validation_label(values, epochs):
    """Names the best epoch in the legend: the number people read the curve for."""
    if all(math.isnan(value) for value in values):
        return "validation"
    best = int(np.nanargmax(values))
    return f"validation (best {values[best]:.2f}% at epoch {epochs[best]})"


def _learning_rate_panel(history):
    column = next((name for name in LEARNING_RATE_COLUMNS if name in history), None)
    return "learning rate", [(None, history[column])] if column else []


def _draw_panel(ax, epochs, label, lines):
    """One panel; a lone epoch gets a marker (no line to draw) and an axis wide enough to tick."""
    lone = len(epochs) < 2
    for line_label, values in lines:
        ax.plot(epochs, values, marker="o" if lone else None, label=line_label)
    if lone:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    if any(line_label for line_label, _ in lines):
        ax.legend()
    if label == "learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
