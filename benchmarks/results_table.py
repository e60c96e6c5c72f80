"""README tables built from committed run outputs (config.json, metrics.json, timing.json).

    python benchmarks/results_table.py results/cpu/fast-s2 results/cpu/fast-s3 results/cpu/fast-s4
    python benchmarks/results_table.py --ablations fast results/cpu/fast-s[234] results/cpu/ablate-*
    python benchmarks/results_table.py --index results

The first form: one row per run (test accuracy with the run's TTA, training seconds, steady-state
images/second, seconds to 90 % test accuracy without TTA) and a mean ± std row. With `--ablations RECIPE`,
each run is named by the settings where it differs from that recipe; runs that differ in nothing are the
baseline (mean ± std of their seeds), and every other row gets its difference from that mean, so the README
never quotes a number by hand. With `--index RESULTS`, the table of every run folder under RESULTS (architecture,
width, recipe, epochs, accuracy, time, CPU) is rewritten in RESULTS/README.md between its two INDEX markers.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from keras_cifar.config import settings
from keras_cifar.run import RunDir, write_atomic

# A run during which other processes used more than this share of the cores was not timed alone.
BUSY_SHARE = 0.10


def row(path: Path) -> dict:
    run = RunDir(path)
    record, metrics = run.require_record(), run.read_metrics()
    timing = run.read_timing() or {}
    training = metrics.get("training", {})
    others = [v for v in run.read_history().get("others_cpu", []) if v == v] if run.history_file.is_file() else []
    return {
        "run": run.path.name,
        "config": record.config,
        "seed": record.config["seed"],
        "precision": record.runtime["precision"],
        "accuracy": 100 * metrics["accuracy"],
        "tta": metrics.get("tta", "none"),
        "seconds": training.get("training_seconds"),
        "img_s": training.get("train_images_per_second"),
        "to_90": (timing.get("seconds_to_test_accuracy") or {}).get("0.90"),
        "others_cpu": max(others) if others else None,
    }


def timed(r) -> str:
    """The training time, marked when the machine was busy or its load was not recorded (older runs)."""
    if r["seconds"] is None:
        return "—"
    mark = (
        ""
        if r["others_cpu"] is not None and r["others_cpu"] <= BUSY_SHARE
        else (" (load not recorded)" if r["others_cpu"] is None else f" (busy: others used {r['others_cpu']:.0%})")
    )
    return f"{r['seconds']:,.0f} s{mark}"


def fmt(value, spec, unit=""):
    return "—" if value is None else format(value, spec) + unit


def mean_std(values) -> str:
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{spread} %"


def runs_table(rows) -> None:
    print("| run | seed | precision | test accuracy (TTA) | training time | img/s | time to 90 % (no TTA) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['run']}` | {r['seed']} | {r['precision']} | {r['accuracy']:.2f} % ({r['tta']}) | "
            f"{timed(r)} | {fmt(r['img_s'], '.0f')} | {fmt(r['to_90'], ',.0f', ' s')} |"
        )
    if len(rows) > 1:
        seconds = [r["seconds"] for r in rows if r["seconds"] is not None]
        print(
            f"| **mean ± std** | | | **{mean_std([r['accuracy'] for r in rows])}** | "
            f"{statistics.fmean(seconds):,.0f} s (max {max(seconds):,.0f}) | | |"
        )


def ablation_table(rows, recipe: str) -> None:
    from keras_cifar.config import TrainConfig, read_config_file, recipe_path

    reference = settings(TrainConfig(**read_config_file(recipe_path(recipe))).to_dict(), without=("seed", "io"))
    defaults = TrainConfig().to_dict()

    def changes(config):
        # A setting missing from an older run's config.json did not exist yet: the run had its default.
        config = {**defaults, **config}
        return ", ".join(f"`{k}: {config[k]}`" for k in sorted(reference) if config[k] != reference[k])

    baseline = [r["accuracy"] for r in rows if not changes(r["config"])]
    if not baseline:
        raise SystemExit(f"no run uses the '{recipe}' recipe unchanged: nothing to compare against")
    base = statistics.fmean(baseline)
    print("| change from the recipe | runs (seeds) | test accuracy (TTA) | difference |")
    print("|---|---|---|---|")
    print(f"| none: `--recipe {recipe}` | {len(baseline)} | {mean_std(baseline)} | — |")
    groups = {}  # runs that differ from the recipe in the same way are one row, whatever their seeds
    for r in rows:
        if changes(r["config"]):
            groups.setdefault(changes(r["config"]), []).append(r)
    for change, group in groups.items():
        accuracies = [r["accuracy"] for r in group]
        seeds = ", ".join(str(r["seed"]) for r in group)
        print(
            f"| {change} | {len(group)} ({seeds}) | {mean_std(accuracies)} | {statistics.fmean(accuracies) - base:+.2f} |"
        )


INDEX_START = "<!-- index: written by `python benchmarks/results_table.py --index results`; do not edit -->"
INDEX_END = "<!-- end of index -->"


def cpu_kind(cpu: dict) -> str:
    """The CPU a run names: model, family and model numbers, and the instruction sets that decide its speed."""
    numbers = f", family {cpu['family']} model {cpu['model_number']}" if "family" in cpu else " (family not recorded)"
    flags = ", ".join(cpu.get("flags", [])) or "flags not recorded"
    return f"{cpu.get('model', 'CPU not recorded')}{numbers}: {flags}"


def index_table(results: Path) -> str:
    """One table per CPU kind, one row per committed run folder, from its own files: what was trained, how well,
    how long. Times compare within a table only."""
    kinds = {}
    for metrics in sorted(results.glob("**/" + RunDir.METRICS)):
        run = RunDir(metrics.parent)
        if run.read_record() is None:  # a report or an export, not a run
            continue
        r, record = row(run.path), run.require_record()
        kinds.setdefault(cpu_kind(record.environment.get("cpu", {})), []).append(
            f"| `{run.path.relative_to(results)}` | {record.arch} | {r['config'].get('width_multiplier', 1.0):g} | "
            f"{r['config'].get('recipe') or '—'} | {record.runtime.get('epochs') or r['config'].get('epochs')} | "
            f"{r['accuracy']:.2f} % ({r['tta']}) | {timed(r)} |"
        )
    tables = []
    for kind, lines in sorted(kinds.items()):
        header = "| run folder | architecture | width | recipe | epochs | test accuracy (TTA) | training time |"
        tables.append("\n".join([f"### {kind}", "", header, "|---|---|---|---|---|---|---|", *lines]))
    return "\n\n".join(tables)


def write_index(results: Path) -> None:
    readme = results / "README.md"
    text = readme.read_text()
    if INDEX_START not in text or INDEX_END not in text:
        raise SystemExit(f"{readme} has no index markers: add the two lines\n{INDEX_START}\n{INDEX_END}")
    before, rest = text.split(INDEX_START, 1)
    after = rest.split(INDEX_END, 1)[1]
    write_atomic(readme, f"{before}{INDEX_START}\n{index_table(results)}\n{INDEX_END}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--ablations", metavar="RECIPE", help="name each run by how it differs from RECIPE")
    parser.add_argument("--index", metavar="RESULTS", type=Path, help="rewrite RESULTS/README.md's table of runs")
    args = parser.parse_args()
    if args.index:
        return write_index(args.index)
    if not args.runs:
        parser.error("name the runs to tabulate, or --index RESULTS")
    rows = [row(run) for run in args.runs]
    if args.ablations:
        ablation_table(rows, args.ablations)
    else:
        runs_table(rows)


if __name__ == "__main__":
    main()
