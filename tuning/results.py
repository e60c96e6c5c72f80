"""What a search leaves behind: a table of every trial (CSV and printed), a plot, and the best config file.

Everything is read back from KerasTuner's own `trial_*/trial.json` files, so it can be rewritten at any time
(the re-run of a finished search does) and works the same after a distributed search.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import yaml
from keras_tuner.engine.trial import Trial

from keras_cifar.config import FIELDS, TrainConfig, overrides_from_mapping, role_of
from keras_cifar.errors import TrainingError
from keras_cifar.run import write_atomic
from tuning.hypermodel import OBJECTIVE
from tuning.space import trial_values

# Settings that only made the search small or say where it ran: a full training from the best config should not
# inherit them silently.
LEFT_OUT = ("train_limit", "val_limit", "test_limit", *(name for name in FIELDS if role_of(name) == "io"))
PLOTTED_SETTINGS = 3


def load_trials(project_dir) -> list[Trial]:
    return sorted((Trial.load(str(f)) for f in Path(project_dir).glob("trial_*/trial.json")), key=lambda t: t.trial_id)


def trial_rows(trials) -> list[dict]:
    """One row per trial: id, status, score, epochs trained, then its settings (Hyperband's bookkeeping too)."""
    rows = []
    for trial in trials:
        epochs = trial.metrics.get_last_value("epochs") if trial.metrics.exists("epochs") else None
        rows.append(
            {
                "trial": trial.trial_id,
                "status": trial.status,
                OBJECTIVE.name: trial.score,
                "epochs": int(epochs) if epochs is not None else None,
                **trial_values(trial.hyperparameters),
                **{k: v for k, v in trial.hyperparameters.values.items() if k.startswith("tuner/")},
            }
        )
    return rows


def write_results(project_dir, base: TrainConfig) -> Path:
    """Write trials.csv, trials.png and best_config.yaml into the project folder, print the table; return the
    best config's path."""
    project_dir = Path(project_dir)
    trials = load_trials(project_dir)
    rows = trial_rows(trials)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (project_dir / "trials.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(format_table(rows, columns))
    completed = [t for t in trials if t.status == "COMPLETED" and t.score is not None]
    if not completed:
        raise TrainingError(f"no trial of {project_dir} completed; the trials' messages are in its trial_*/trial.json")
    plot_trials(rows, project_dir / "trials.png")
    best = max(completed, key=lambda t: t.score)
    return write_best_config(best, base, project_dir / "best_config.yaml")


def format_table(rows, columns) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    header = columns
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_best_config(trial, base: TrainConfig, path: Path) -> Path:
    """The base config with the best trial's values, as a `--config` file, checked by reading it back."""
    settings = {k: v for k, v in base.to_dict().items() if k not in LEFT_OUT}
    values = trial_values(trial.hyperparameters)
    settings.update(values)
    header = (
        f"# Best trial {trial.trial_id} of this search: {OBJECTIVE.name} {trial.score:.4f}.\n"
        f"# Searched: {', '.join(values) or 'nothing'}; every other setting is the search's base config.\n"
        f"# Left out, so a full run does not inherit the search's data slice or paths: {', '.join(LEFT_OUT)}.\n"
        f"# Use: python -m keras_cifar.train --config {path.name} --data-dir DIR\n"
    )
    write_atomic(path, header + yaml.safe_dump(settings, sort_keys=False))
    TrainConfig(**overrides_from_mapping(yaml.safe_load(path.read_text()), str(path))).validate()
    return path


def importance(rows, name) -> float:
    """How strongly a setting goes with the score across completed trials, in [0, 1]: |Spearman correlation| for
    numbers, the correlation ratio for choices. A rough guide from a few trials, not a causal measure."""
    pairs = [
        (r[name], r[OBJECTIVE.name])
        for r in rows
        if r.get(name) is not None and r["status"] == "COMPLETED" and r[OBJECTIVE.name] is not None
    ]
    if len({v for v, _ in pairs}) < 2:
        return 0.0
    values, scores = zip(*pairs)
    scores = np.asarray(scores, dtype=float)
    if scores.std() == 0:
        return 0.0
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        from scipy.stats import spearmanr

        rho = spearmanr(values, scores).statistic
        return 0.0 if math.isnan(rho) else abs(float(rho))
    groups = {}
    for value, score in pairs:
        groups.setdefault(value, []).append(score)
    between = sum(len(g) * (np.mean(g) - scores.mean()) ** 2 for g in groups.values())
    return float(np.sqrt(between / (len(scores) * scores.var())))


def plot_trials(rows, path: Path) -> None:
    """Score against trial number, and against the settings that go with it most."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    done = [r for r in rows if r["status"] == "COMPLETED" and r[OBJECTIVE.name] is not None]
    names = sorted({k for r in rows for k in r if k in FIELDS}, key=lambda k: -importance(rows, k))[:PLOTTED_SETTINGS]
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.5 * (1 + len(names)), 3.6), squeeze=False)
    ax = axes[0][0]
    numbers = [int(r["trial"]) for r in done]
    scores = [r[OBJECTIVE.name] for r in done]
    ax.plot(numbers, scores, "o", label="trial")
    ax.step(numbers, np.maximum.accumulate(scores), where="post", label="best so far")
    ax.set(xlabel="trial", ylabel=OBJECTIVE.name, title="score by trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend()
    for ax, name in zip(axes[0][1:], names):
        pairs = [(r.get(name), r[OBJECTIVE.name]) for r in done if r.get(name) is not None]
        values = [v for v, _ in pairs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            ax.plot(values, [s for _, s in pairs], "o")
            if min(values) > 0 and max(values) / min(values) > 3:  # the log-sampled ranges
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ax.plot([labels.index(str(v)) for v in values], [s for _, s in pairs], "o")
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=name, title=f"importance {importance(rows, name):.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
