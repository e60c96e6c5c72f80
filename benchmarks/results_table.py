"""README tables built from committed run outputs (config.json, metrics.json, timing.json).

    python benchmarks/results_table.py results/cpu/fast-s2 results/cpu/fast-s3 results/cpu/fast-s4
    python benchmarks/results_table.py --ablations fast results/cpu/fast-s[234] results/cpu/ablate-*
    python benchmarks/results_table.py --index results

The first form: one row per run (test accuracy with the run's TTA, training seconds, steady-state
images/second, seconds to 90 % test accuracy without TTA) and a mean ± std row. With `--ablations RECIPE`,
each run is named by the settings where it differs from that recipe; runs that differ in nothing are the
baseline (mean ± std of their seeds), and every other row gets its difference from that mean, beside the
mean accuracy after the last epoch without TTA (from timing.json, where the run has one) and the mean training
time of the runs not flagged busy, so the README never quotes a number by hand. With `--index RESULTS`, the
table of every run folder under RESULTS (architecture, width, recipe, epochs, accuracy, time, CPU) is rewritten
in RESULTS/README.md between its two INDEX markers.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from keras_cifar.config import (
    TrainConfig,
    available_recipes,
    parse_train_args,
    read_config_file,
    recipe_path,
    resolve_config,
    role_of,
    settings,
)
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
        "last_no_tta": 100 * timing["epochs"][-1]["test_accuracy"] if timing.get("epochs") else None,
        "others_cpu": max(others) if others else None,
    }


def alone(r) -> bool:
    """Timed with the cores to itself: other processes' share recorded, and at most BUSY_SHARE in any epoch."""
    return r["seconds"] is not None and r["others_cpu"] is not None and r["others_cpu"] <= BUSY_SHARE


def timed(r) -> str:
    """The training time, marked when the machine was busy or its load was not recorded (older runs)."""
    if r["seconds"] is None:
        return "—"
    mark = (
        ""
        if alone(r)
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


def changes(config: dict, reference: dict) -> str:
    """The settings of `reference` on which a run's config differs from it, as `key: value`, in key order."""
    # A setting missing from an older run's config.json did not exist yet: the run had its default.
    config = {**TrainConfig().to_dict(), **config}
    idle = ("muon_lr", "muon_momentum") if config["optimizer"] != "muon" else ()  # they act only under Muon
    return ", ".join(f"`{k}: {config[k]}`" for k in sorted(reference) if config[k] != reference[k] and k not in idle)


def group_means(group) -> str:
    """The last two cells of an ablation row: mean accuracy after the last epoch without TTA (runs that have a
    timing.json), and mean training time of the runs not timed beside other work (a busy run's time is no speed
    figure; older runs did not record the load, which the cell says)."""
    last = [r["last_no_tta"] for r in group if r["last_no_tta"] is not None]
    timed_runs = [r for r in group if r["seconds"] is not None and (alone(r) or r["others_cpu"] is None)]
    last_cell = f"{statistics.fmean(last):.2f} % ({len(last)})" if last else "—"
    unknown = ", load not recorded" if any(r["others_cpu"] is None for r in timed_runs) else ""
    seconds = statistics.fmean(r["seconds"] for r in timed_runs) if timed_runs else None
    time_cell = f"{seconds:,.0f} s ({len(timed_runs)}{unknown})" if timed_runs else "—"
    return f"{last_cell} | {time_cell}"


def ablation_table(rows, recipe: str) -> None:
    reference = settings(TrainConfig(**read_config_file(recipe_path(recipe))).to_dict(), without=("seed", "io"))
    baseline = [r for r in rows if not changes(r["config"], reference)]
    if not baseline:
        raise SystemExit(f"no run uses the '{recipe}' recipe unchanged: nothing to compare against")
    base = statistics.fmean(r["accuracy"] for r in baseline)
    print(
        "| change from the recipe | runs (seeds) | test accuracy (TTA) | difference | "
        "after the last epoch, no TTA (runs) | training time (runs) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| none: `--recipe {recipe}` | {len(baseline)} | {mean_std([r['accuracy'] for r in baseline])} | — | "
        f"{group_means(baseline)} |"
    )
    groups = {}  # runs that differ from the recipe in the same way are one row, whatever their seeds
    for r in rows:
        if change := changes(r["config"], reference):
            groups.setdefault(change, []).append(r)
    for change, group in groups.items():
        accuracies = [r["accuracy"] for r in group]
        seeds = ", ".join(str(r["seed"]) for r in group)
        print(
            f"| {change} | {len(group)} ({seeds}) | {mean_std(accuracies)} | "
            f"{statistics.fmean(accuracies) - base:+.2f} | {group_means(group)} |"
        )


INDEX_START = "<!-- index: written by `python benchmarks/results_table.py --index results`; do not edit -->"
INDEX_END = "<!-- end of index -->"


def cpu_kind(cpu: dict) -> str:
    """The CPU a run names: model, family and model numbers, and the instruction sets that decide its speed."""
    numbers = f", family {cpu['family']} model {cpu['model_number']}" if "family" in cpu else " (family not recorded)"
    flags = ", ".join(cpu.get("flags", [])) or "flags not recorded"
    return f"{cpu.get('model', 'CPU not recorded')}{numbers}: {flags}"


def recipe_cell(config: dict) -> str:
    """The recipe a run names, and the training settings on which the run differs from that recipe as it stands
    now (with the run's architecture), so a row says what `--recipe` alone would not reproduce."""
    if not config.get("recipe"):
        return "—"  # older runs did not record it
    if config["recipe"] not in available_recipes():
        return f"{config['recipe']} (no longer a recipe)"
    resolved = resolve_config(parse_train_args(["--arch", config["arch"], "--recipe", config["recipe"]])).to_dict()
    reference = {k: v for k, v in resolved.items() if role_of(k) == "experiment" and k != "width_multiplier"}
    changed = changes(config, reference)
    return config["recipe"] + (f" + {changed}" if changed else "")


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
            f"{recipe_cell(r['config'])} | {record.runtime.get('epochs') or r['config'].get('epochs')} | "
            f"{r['accuracy']:.2f} % ({r['tta']}) | {timed(r)} |"
        )
    tables = []
    for kind, lines in sorted(kinds.items()):
        header = (
            "| run folder | architecture | width | recipe (+ changes from it as it stands) | epochs "
            "| test accuracy (TTA) | training time |"
        )
        tables.append("\n".join([f"### {kind}", "", header, "|---|---|---|---|---|---|---|", *lines]))
    return "\n\n".join(tables)


def side_named(summary: dict, prefix: str) -> dict | None:
    """A side of `peer_summary` by the start of its name ("ours", "peer"), or None when it never ran."""
    return next((v for k, v in summary.items() if k.startswith(prefix)), None)


def peer_summary(runs: list[dict]) -> dict:
    """Per side of `benchmarks/peer.py`: runs, mean accuracy and its spread over all runs, mean training time over
    the idle runs only; and ours's time over the peer's."""
    sides = {}
    for run in runs:
        sides.setdefault(run["side"], []).append(run)
    result = {}
    for side, side_runs in sides.items():
        idle = [run for run in side_runs if run["idle"]]
        result[side] = {
            "runs": len(side_runs),
            "idle_runs": len(idle),
            "mean_training_seconds": statistics.fmean(r["training_seconds"] for r in idle) if idle else None,
            "mean_accuracy": statistics.fmean(r["accuracy"] for r in side_runs),
            "accuracy_sd": statistics.stdev(r["accuracy"] for r in side_runs) if len(side_runs) > 1 else None,
        }
    ours, peer = (side_named(result, p) for p in ("ours", "peer"))
    if ours and peer and ours["mean_training_seconds"] and peer["mean_training_seconds"]:
        result["time_ratio"] = ours["mean_training_seconds"] / peer["mean_training_seconds"]
    return result


def peer_table(runs: list[dict]) -> str:
    """The sides `benchmarks/peer.py` ran, one row each, a mean row per side and the time ratio."""
    lines = [
        "| side | seed | epochs | epoch s (median) | img/s | test acc (TTA) | training s | load before | busiest epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        busy = "—" if r["busiest_epoch_others_cpu"] is None else f"{r['busiest_epoch_others_cpu']:.0%}"
        lines.append(
            f"| {r['side']} | {r['seed']} | {r['planned_epochs']:g} | {r['median_epoch_seconds']:.1f} | "
            f"{r['images_per_second']:.0f} | {100 * r['accuracy']:.2f} % | {r['training_seconds']:,.0f}"
            f"{'' if r['idle'] else ' (busy)'} | {r['load_before']:.2f} | {busy} |"
        )
    summary = peer_summary(runs)
    for side in dict.fromkeys(r["side"] for r in runs):
        mean = summary[side]
        spread = "" if mean["accuracy_sd"] is None else f" ± {100 * mean['accuracy_sd']:.2f}"
        seconds = mean["mean_training_seconds"]
        lines.append(
            f"| **{side}, mean** | {mean['runs']} runs, {mean['idle_runs']} idle | | | | "
            f"**{100 * mean['mean_accuracy']:.2f}{spread} %** | {'—' if seconds is None else f'**{seconds:,.0f}**'} | | |"
        )
    return "\n".join([*lines, "", ratio_verdict(summary)])


def ratio_verdict(summary: dict) -> str:
    """The time ratio, or why there is none: a side that never ran, or one whose every run was on a busy machine."""
    if summary.get("time_ratio"):
        return f"ours / peer mean training time (idle runs only): **{summary['time_ratio']:.2f}**"
    missing = [p for p in ("ours", "peer") if side_named(summary, p) is None]
    if missing:
        return f"no ratio: no run of {' or '.join(missing)} here"
    return "no ratio: a side has no idle run"


def peer_tables(results: Path) -> str:
    """One table per CPU kind of the fast recipe beside the real peer, from the side files `benchmarks/peer.py`
    leaves (`ours-sN.summary.json`, `peer-sN.summary.json`): pairs compare within one folder, one machine."""
    folders = {}
    for path in sorted(results.glob("**/*.summary.json")):
        folders.setdefault(path.parent, []).append(json.loads(path.read_text()))
    tables = []
    for folder, runs in folders.items():
        runs.sort(key=lambda r: (r["seed"], not r["side"].startswith("ours")))
        tables.append(
            f"### {cpu_kind(runs[0]['cpu'])}: `{folder.relative_to(results)}`, the fast recipe beside the real "
            f"peer\n\n{peer_table(runs)}"
        )
    return "\n\n".join(tables)


def write_index(results: Path) -> None:
    readme = results / "README.md"
    text = readme.read_text()
    if INDEX_START not in text or INDEX_END not in text:
        raise SystemExit(f"{readme} has no index markers: add the two lines\n{INDEX_START}\n{INDEX_END}")
    before, rest = text.split(INDEX_START, 1)
    after = rest.split(INDEX_END, 1)[1]
    tables = "\n\n".join(filter(None, (index_table(results), peer_tables(results))))
    write_atomic(readme, f"{before}{INDEX_START}\n{tables}\n{INDEX_END}{after}")


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
