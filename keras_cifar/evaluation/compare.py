"""Reading finished runs and comparing them: groups of seeds, their spread, and which differences are real.

A run is a run directory (config.json, metrics.json, history.csv, model.keras). Runs are grouped by
architecture and settings (everything but the seed), so several seeds of one recipe become one row with a
mean and a standard deviation. Runs scored on different data or test sets are never mixed: they fall into
separate sections.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
from pathlib import Path

import numpy as np

from keras_cifar.errors import CheckpointError
from keras_cifar.evaluation.history import read_history

# Settings that do not change what a run measures, so runs differing only in them are the same experiment.
NOT_THE_EXPERIMENT = {"seed", "run_dir", "verbose", "tensorboard", "data_dir", "source", "time_budget"}


@dataclasses.dataclass
class Run:
    path: Path
    config: dict
    runtime: dict
    data: dict
    metrics: dict
    history: dict
    exports: dict = dataclasses.field(default_factory=dict)  # per-format figures from an export of this run

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def training(self) -> dict:
        return self.metrics.get("training", {})

    def data_key(self) -> tuple:
        """What must match for two runs' test figures to be comparable: the data and the test set."""
        return (self.data.get("fingerprint"), self.metrics.get("num_test_images"), self.metrics.get("tta", "none"))

    def experiment(self) -> tuple:
        return tuple(sorted((k, json.dumps(v)) for k, v in self.config.items() if k not in NOT_THE_EXPERIMENT))


def find_runs(paths) -> list[Path]:
    """Run directories among `paths`; a folder that holds run directories (a suite's) is expanded."""
    found = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            found.append(path)
        elif path.is_dir() and any(path.glob("*/metrics.json")):
            found += sorted(p.parent for p in path.glob("*/metrics.json"))
        elif path.is_dir() and any(path.glob("*/*/metrics.json")):
            found += sorted(p.parent for p in path.glob("*/*/metrics.json"))
        else:
            raise CheckpointError(f"{path}: not a finished run directory (no metrics.json) nor a folder of them")
    return found


def load_run(path: Path) -> Run:
    try:
        saved = json.loads((path / "config.json").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable config.json or metrics.json ({exc})") from None
    history = read_history(path / "history.csv") if (path / "history.csv").is_file() else {}
    return Run(path, saved["config"], saved.get("runtime", {}), saved.get("data", {}), metrics, history)


def measure_model(run: Run) -> dict:
    """Parameters, FLOPs per image and Keras CPU latency at batch 1, timed as exported formats are."""
    import types

    from keras_cifar.evaluation.report import load_model_file
    from keras_cifar.export.check import speed
    from keras_cifar.models.flops import flops_per_image

    model = load_model_file(run.path / "model.keras")
    images = np.zeros((4, *model.input_shape[1:]), dtype=np.float32)
    timing = speed(types.SimpleNamespace(predict=model.predict_on_batch), images, latency_runs=30, throughput_runs=1)
    return {"parameters": model.count_params(), "flops": flops_per_image(model),
            "latency_ms": timing["latency_ms_median"]}


def export_figures(run: Run, exports_dir: Path | None) -> dict:
    """Per-format accuracy and latency from an export of this run (exports_dir/RUN_NAME), if there is one."""
    if exports_dir is None:
        return {}
    report = exports_dir / run.name / "export_report.json"
    if not report.is_file():
        return {}
    formats = json.loads(report.read_text())["formats"]
    return {name: {"accuracy": row["accuracy"], "latency_ms": row["latency_ms_median"],
                   "size_mb": row["size_bytes"] / 1e6} for name, row in formats.items()}


@dataclasses.dataclass
class Group:
    """The runs of one experiment (same architecture and settings, different seeds)."""

    label: str
    runs: list
    measured: list  # measure_model() per run

    def values(self, key) -> list[float]:
        return [key(run, measured) for run, measured in zip(self.runs, self.measured)]

    def mean(self, key) -> float:
        return statistics.fmean(self.values(key))

    def std(self, key) -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None


def group_runs(runs: list[Run], measured: list[dict]) -> list[Group]:
    """One group per experiment; labels name the architecture and, where needed, what else differs."""
    by_experiment: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        by_experiment.setdefault(run.experiment(), []).append(i)
    groups = []
    for indices in by_experiment.values():
        first = runs[indices[0]]
        siblings = [runs[by_experiment[e][0]] for e in by_experiment if runs[by_experiment[e][0]].arch == first.arch]
        differing = sorted({k for other in siblings for k in first.config
                            if k not in NOT_THE_EXPERIMENT and other.config.get(k) != first.config[k]})
        label = first.arch + (" (" + ", ".join(f"{k}={first.config[k]}" for k in differing) + ")" if differing else "")
        groups.append(Group(label, [runs[i] for i in indices], [measured[i] for i in indices]))
    return sorted(groups, key=lambda g: -g.mean(lambda r, m: r.accuracy))


def compare_pair(a: Group, b: Group) -> dict:
    """Is the accuracy difference between two groups larger than their seed-to-seed spread?

    With two or more seeds on both sides, Welch's t-test (p < 0.05); with seeds on one side only, whether the
    difference exceeds twice that side's standard deviation; with one run each the spread is unknown.
    """
    accuracy = lambda r, m: r.accuracy  # noqa: E731
    diff = a.mean(accuracy) - b.mean(accuracy)
    result = {"a": a.label, "b": b.label, "difference_points": 100 * diff}
    if len(a.runs) > 1 and len(b.runs) > 1:
        from scipy import stats

        p = stats.ttest_ind(a.values(accuracy), b.values(accuracy), equal_var=False).pvalue
        p = 1.0 if math.isnan(p) else float(p)  # identical values on both sides
        result.update(test="Welch t-test", p_value=p, larger_than_spread=p < 0.05)
    elif len(a.runs) > 1 or len(b.runs) > 1:
        spread = (a if len(a.runs) > 1 else b).std(accuracy)
        result.update(test="2 x seed std", spread_points=100 * spread, larger_than_spread=abs(diff) > 2 * spread)
    else:
        result.update(test="none (one run each)", larger_than_spread=None)
    return result


def sections(runs: list[Run]) -> list[list[int]]:
    """Indices of runs that share data, test set and TTA: only these are compared with each other."""
    by_key: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        by_key.setdefault(run.data_key(), []).append(i)
    return list(by_key.values())


def pairs(groups: list[Group]) -> list[dict]:
    return [compare_pair(a, b) for a, b in itertools.combinations(groups, 2)]
