"""The fast recipe beside the real PyTorch peer, on this CPU, one after the other: the peer's own script, not a twin.

    git clone https://github.com/KellerJordan/cifar10-airbench            # the peer, kept outside this project
    python -m venv torch-venv && torch-venv/bin/pip install torch==2.13.0 numpy
    python benchmarks/peer.py --airbench cifar10-airbench --torch-python torch-venv/bin/python \
        --seeds 0,1,2 --data-dir ../shared/data/cifar10 --out runs/peer-vs-fast

For each seed it trains ours (`time_to_accuracy.py --recipe fast`, flags after `--` go to it, e.g. `-- --precision
float32`) and the peer (`benchmarks/peer_runner.py` runs the script as fetched, swapping only what a GPU script
cannot do on a CPU: see that file), alternating which goes first, and prints both sides' epoch times, img/s,
accuracies, the CPU and the load: the 1-minute load average before each run and the share of the cores other
processes used in each epoch. A run whose machine was not idle is flagged and left out of the ratio.

Re-run the same command after a kill: finished sides are kept, an interrupted one starts again (a resumed run
would time only part of its training).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from results_table import BUSY_SHARE, peer_summary, peer_table

HERE = Path(__file__).resolve().parent
PEERS = {"airbench94": "legacy/airbench94.py", "airbench94_muon": "airbench94_muon.py"}
TRAIN_IMAGES = 50_000
IDLE_LOAD = 0.5  # 1-minute load average per core before a run; above it, the run waits for the machine to settle
CHANCE = 0.2  # twice chance for 10 classes: a run that ends under it diverged, and its time compares nothing


def write_data(data_dir, path: Path) -> str:
    """The arrays ours trains on, for the peer to read too: one loader, the same pixels."""
    import numpy as np

    from keras_cifar.data import load_cifar10

    data = load_cifar10(data_dir)
    if not path.exists():
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                 classes=np.array(data.class_names))  # fmt: skip
        partial.replace(path)
    return data.fingerprint


def peer_precision(requested: str) -> str:
    """The peer runs in the precision ours would pick here: bfloat16 autocast where the CPU has bfloat16."""
    from keras_cifar.training.host import choose_precision

    return "bfloat16" if "bfloat16" in choose_precision(requested)[0] else "float32"


def run_ours(args, seed: int, folder: Path) -> dict:
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted run starts again: resumed, it would time part of it
    command = [sys.executable, str(HERE / "time_to_accuracy.py"), "--recipe", args.recipe, "--seed", str(seed)]
    command += ["--no-tensorboard", "--verbose", "2", "--data-dir", str(args.data_dir), "--run-dir", str(folder)]
    subprocess.run(command + args.ours_flags, check=True)
    timing = json.loads((folder / "timing.json").read_text())
    epochs = timing["epochs"]
    return {
        "side": f"ours ({args.recipe})",
        "seed": seed,
        "epochs": len(epochs),
        "planned_epochs": timing.get("planned_epochs", len(epochs)),
        "epoch_seconds": [row["epoch_seconds"] for row in epochs],
        "others_cpu": [row["others_cpu"] for row in epochs],
        "training_seconds": timing["training_seconds"],
        "accuracy": timing["final_test_accuracy"],
        "precision": timing["precision"],
        "cpu": timing["cpu"],
    }


def run_peer(args, seed: int, out: Path, data: Path) -> dict:
    command = [args.torch_python, str(HERE / "peer_runner.py"), "--script", str(args.airbench / PEERS[args.peer])]
    command += ["--data", str(data), "--seed", str(seed), "--precision", args.peer_precision, "--out", str(out)]
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    rows = [row for row in result["rows"] if row["epoch"] != "eval"]
    ends = [row["time_seconds"] for row in rows]
    return {
        "side": f"peer ({args.peer})",
        "seed": seed,
        "epochs": result["epochs"],
        "planned_epochs": result["planned_epochs"],
        "epoch_seconds": [b - a for a, b in zip([0.0, *ends], ends)],
        "others_cpu": [row["others_cpu"] for row in rows],
        "training_seconds": result["training_seconds"],
        "accuracy": result["tta_accuracy"],
        "precision": result["precision"],
        "cpu": result["cpu"],
    }


def check_trained(run: dict) -> None:
    """Stop before a diverged run is written as a finished side (a re-run then trains it again)."""
    if not run["accuracy"] >= CHANCE:  # also NaN
        raise SystemExit(
            f"seed {run['seed']}: {run['side']} ended at {run['accuracy']:.2%} test accuracy, about chance: it "
            "diverged (its log shows where); nothing is written for it"
        )


def describe(run: dict) -> dict:
    """Median epoch of the full epochs (airbench94's last is 0.9 of one: left out), img/s from it, and idleness."""
    partial = not float(run["planned_epochs"]).is_integer() and len(run["epoch_seconds"]) > 1
    full = run["epoch_seconds"][:-1] if partial else run["epoch_seconds"]
    others = [share for share in run["others_cpu"] if share is not None]
    median = statistics.median(full)
    busiest = max(others) if others else None
    return {
        **run,
        "median_epoch_seconds": median,
        "images_per_second": TRAIN_IMAGES / median,
        "busiest_epoch_others_cpu": busiest,
        "idle": busiest is not None and busiest <= BUSY_SHARE and run["load_before"] <= IDLE_LOAD * os.cpu_count(),
    }


def wait_for_idle(limit: float, timeout: float = 600) -> float:
    """The 1-minute load average once it is under `limit` (or after `timeout` s): a run started on a busy
    machine fits nothing to it but its own time is off."""
    import time

    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        time.sleep(10)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--airbench", type=Path, required=True, help="a clone of KellerJordan/cifar10-airbench")
    parser.add_argument("--peer", choices=sorted(PEERS), default="airbench94")
    parser.add_argument("--torch-python", required=True, help="a Python with torch (and numpy) installed")
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; each seed trains both sides")
    parser.add_argument("--precision", default="auto", help="ours's --precision; the peer follows it")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("ours_flags", nargs="*", help="after --: more flags for ours (time_to_accuracy.py)")
    args = parser.parse_args()
    script = args.airbench / PEERS[args.peer]
    if not script.is_file():
        parser.error(f"{script} not found: --airbench must be a clone of KellerJordan/cifar10-airbench")
    args.peer_precision = peer_precision(args.precision)
    args.ours_flags = ["--precision", args.precision, *args.ours_flags]
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "cifar10.npz"
    fingerprint = write_data(args.data_dir, data)

    runs = []
    for index, seed in enumerate(int(s) for s in args.seeds.split(",")):
        sides = [("ours", seed), ("peer", seed)]
        for side, seed in sides if index % 2 == 0 else sides[::-1]:  # both orders, as the machine warms
            done = args.out / f"{side}-s{seed}.summary.json"
            if not done.is_file():
                load = wait_for_idle(IDLE_LOAD * os.cpu_count())
                print(f"seed {seed}: {side}, 1-minute load before {load:.2f}", flush=True)
                run = (
                    run_ours(args, seed, args.out / f"ours-s{seed}")
                    if side == "ours"
                    else run_peer(args, seed, args.out / f"peer-s{seed}.json", data)
                )
                check_trained(run)
                done.write_text(json.dumps(describe({**run, "load_before": load}), indent=2) + "\n")
            runs.append(json.loads(done.read_text()))

    report = {"data_fingerprint": fingerprint, "runs": runs, "summary": peer_summary(runs)}
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    text = peer_table(runs)
    (args.out / "summary.md").write_text(text + "\n")
    print(f"CPU: {runs[0]['cpu']}\n{text}")


if __name__ == "__main__":
    main()
