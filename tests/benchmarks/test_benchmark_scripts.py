"""The benchmarks whose output the README's tables are built from: run as a user runs them, on a few images."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_time_to_accuracy_writes_a_curve_with_every_epoch(cifar_dir, tmp_path):
    run_dir = tmp_path / "tta"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/time_to_accuracy.py",
            "--recipe",
            "fast",
            "--width-multiplier",
            "0.125",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--train-limit",
            "512",
            "--test-limit",
            "200",
            "--no-tensorboard",
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(run_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    timing = json.loads((run_dir / "timing.json").read_text())
    assert [e["epoch"] for e in timing["epochs"]] == [1, 2]
    assert all(0.0 <= e["test_accuracy"] <= 1.0 and e["epoch_seconds"] > 0 for e in timing["epochs"])
    assert timing["training_seconds"] == timing["epochs"][-1]["training_seconds_so_far"]
    assert timing["final_tta"] == "flip_translate" and timing["precision"] in ("float32", "mixed_bfloat16")
    # scored on the 200 test images asked for: every accuracy is a whole number of them
    assert all(abs(e["test_accuracy"] * 200 - round(e["test_accuracy"] * 200)) < 1e-6 for e in timing["epochs"])
