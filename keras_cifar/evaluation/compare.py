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

from keras_cifar.config import settings
from keras_cifar.run import RunDir, find_runs, read_json, write_atomic


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
        return tuple(sorted((k, json.dumps(v)) for k, v in settings(self.config, without=("seed", "io")).items()))


def load_run(run: RunDir) -> Run:
    record = run.require_record()
    metrics = run.read_metrics()
    history = run.read_history() if run.history_file.is_file() else {}
    return Run(run.path, record.config, record.runtime, record.data, metrics, history)


def measure_model(run: Run) -> dict:
    """Parameters, FLOPs per image and Keras CPU latency at batch 1, timed as exported formats are."""
    import types

    from keras_cifar.evaluation.latency import speed
    from keras_cifar.models.flops import flops_per_image
    from keras_cifar.models.saving import load_model_file

    model = load_model_file(RunDir(run.path).model_file)
    images = np.zeros((4, *model.input_shape[1:]), dtype=np.float32)
    timing = speed(types.SimpleNamespace(predict=model.predict_on_batch), images, latency_runs=30, throughput_runs=1)
    return {
        "parameters": model.count_params(),
        "flops": flops_per_image(model),
        "latency_ms": timing["latency_ms_median"],
    }


def export_figures(run: Run, exports_dir: Path | None) -> dict:
    """Per-format accuracy and latency from an export of this run (exports_dir/RUN_NAME), if there is one."""
    if exports_dir is None:
        return {}
    report = read_json(exports_dir / run.name / "export_report.json")
    if not report:
        return {}
    formats = report["formats"]
    return {
        name: {"accuracy": row["accuracy"], "latency_ms": row["latency_ms_median"], "size_mb": row["size_bytes"] / 1e6}
        for name, row in formats.items()
    }


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
        counted = settings(first.config, without=("seed", "io"))
        differing = sorted({k for other in siblings for k in counted if other.config.get(k) != counted[k]})
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


def build_report(run_paths, out: Path, exports=None, title="CIFAR-10 architecture comparison", note=None) -> Path:
    from keras_cifar.evaluation.comparison_report import build_section, render_html, render_markdown

    runs = [load_run(path) for path in find_runs(run_paths)]
    for run in runs:
        run.exports = export_figures(run, exports)
    measured = []
    for number, run in enumerate(runs, start=1):
        print(f"measuring {run.name} ({number}/{len(runs)}): parameters, FLOPs, latency", flush=True)
        measured.append(measure_model(run))
    out.mkdir(parents=True, exist_ok=True)
    blocks = [("h1", title)] + ([("p", note)] if note else [])
    parts = sections(runs)
    if len(parts) > 1:
        blocks.append(
            (
                "p",
                f"**These runs were scored on {len(parts)} different data sets, test sets or TTA "
                "settings; each is compared in its own section and no figure mixes them.**",
            )
        )
    for number, indices in enumerate(parts, start=1):
        first = runs[indices[0]]
        fingerprint, test_images, tta = first.data_key()
        if len(parts) > 1:
            blocks.append(("h2", f"Section {number}"))
        blocks.append(
            ("p", f"Data fingerprint `{fingerprint}`, {test_images:,} test images, TTA {tta}; {len(indices)} run(s).")
        )
        groups = group_runs([runs[i] for i in indices], [measured[i] for i in indices])
        blocks += build_section(groups, first.data["class_names"], out, prefix=f"s{number}_" if len(parts) > 1 else "")
    write_atomic(out / "report.md", render_markdown(blocks, out))
    write_atomic(out / "report.html", render_html(blocks, title))
    return out
