"""The README's fast-recipe table, built from committed run outputs (config.json, metrics.json, timing.json).

    python benchmarks/results_table.py results/cpu/fast-s2 results/cpu/fast-s3 results/cpu/fast-s4

One row per run (test accuracy with the run's TTA, training seconds, steady-state images/second, seconds to
90 % test accuracy without TTA) and a mean ± std row, so the README never quotes a number by hand.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def row(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    timing_file = run / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    training = metrics.get("training", {})
    return {"run": run.name, "seed": config["config"]["seed"], "precision": config["runtime"]["precision"],
            "accuracy": 100 * metrics["accuracy"], "tta": metrics.get("tta", "none"),
            "seconds": training.get("training_seconds"), "img_s": training.get("train_images_per_second"),
            "to_90": (timing.get("seconds_to_test_accuracy") or {}).get("0.90")}


def fmt(value, spec, unit=""):
    return "—" if value is None else format(value, spec) + unit


def main() -> None:
    rows = [row(Path(p)) for p in sys.argv[1:]]
    print("| run | seed | precision | test accuracy (TTA) | training time | img/s | time to 90 % (no TTA) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['run']}` | {r['seed']} | {r['precision']} | {r['accuracy']:.2f} % ({r['tta']}) | "
              f"{fmt(r['seconds'], ',.0f', ' s')} | {fmt(r['img_s'], '.0f')} | {fmt(r['to_90'], ',.0f', ' s')} |")
    if len(rows) > 1:
        accuracy = [r["accuracy"] for r in rows]
        seconds = [r["seconds"] for r in rows if r["seconds"] is not None]
        print(f"| **mean ± std** | | | **{statistics.fmean(accuracy):.2f} ± {statistics.stdev(accuracy):.2f} %** | "
              f"{statistics.fmean(seconds):,.0f} s (max {max(seconds):,.0f}) | | |")


if __name__ == "__main__":
    main()
