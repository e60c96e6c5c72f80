"""The benchmarks whose output the README's tables are built from: run as a user runs them, on a few images."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
            "1.5",
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
    assert [e["epoch"] for e in timing["epochs"]] == [1, 2] and timing["planned_epochs"] == 1.5  # 4 steps, then 2
    assert all(0.0 <= e["test_accuracy"] <= 1.0 and e["epoch_seconds"] > 0 for e in timing["epochs"])
    assert timing["training_seconds"] == timing["epochs"][-1]["training_seconds_so_far"]
    assert timing["final_tta"] == "flip_translate" and timing["precision"] in ("float32", "mixed_bfloat16")
    # scored on the 200 test images asked for: every accuracy is a whole number of them
    assert all(abs(e["test_accuracy"] * 200 - round(e["test_accuracy"] * 200)) < 1e-6 for e in timing["epochs"])


def test_the_results_index_is_built_from_the_run_folders_and_keeps_the_rest_of_the_readme(tmp_path):
    results = tmp_path / "results"
    for name in (
        "classic-fast/r18w025-b15-cf-b128-lr01-s0",
        "classic-fast/r18w025-b15-default-idle-s0",
        "peer-vs-fast-zen3/ours-s0",
    ):
        shutil.copytree(REPO / "results/cpu" / name, results / "cpu" / name.split("/")[1])
    readme = results / "README.md"
    start = "<!-- index: written by `python benchmarks/results_table.py --index results`; do not edit -->"
    readme.write_text(f"# results\n\nintro\n\n{start}\nstale\n<!-- end of index -->\n\nafter\n")

    def index():
        return subprocess.run(
            [sys.executable, "benchmarks/results_table.py", "--index", str(results)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert index().returncode == 0
    text = readme.read_text()
    assert text.startswith("# results\n\nintro\n\n") and text.endswith("\n\nafter\n") and "stale" not in text
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `cpu/")}
    assert len(rows) == 3
    # the recipe, and what the run changed from it: `--recipe classic-fast` alone would not give this run
    tuned = rows["cpu/r18w025-b15-cf-b128-lr01-s0"]
    assert "74.98 % (flip_translate)" in tuned and "| classic-fast + " in tuned
    assert "`batch_size: 128`" in tuned and "`lr: 0.1`" in tuned and "width_multiplier" not in tuned
    assert "`optimizer: sgd`" in tuned and "muon_lr" not in tuned  # SGD before the recipe took Muon; its step is idle
    assert "| fast | 8 |" in rows["cpu/ours-s0"]  # the recipe unchanged
    older = rows["cpu/r18w025-b15-default-idle-s0"]
    assert "73.37 % (none)" in older and "| — |" in older  # written before runs recorded their recipe
    assert "### AMD EPYC, family 25 model 1: avx2, fma" in text  # one table per CPU kind
    assert index().returncode == 0 and readme.read_text() == text  # rebuilt the same
    config = results / "cpu/r18w025-b15-cf-b128-lr01-s0/config.json"  # its recipe since renamed or removed:
    config.write_text(config.read_text().replace('"recipe": "classic-fast"', '"recipe": "retired"'))
    assert index().returncode == 0 and "| retired (no longer a recipe) |" in readme.read_text()
    readme.write_text("no markers\n")
    assert index().returncode != 0


def test_the_peer_benchmark_times_only_idle_runs_and_flags_the_rest(monkeypatch, tmp_path):
    """Both sides' rows as `benchmarks/peer.py` prints them: a run whose machine was busy is marked and kept out
    of the ratio of mean training times; a fractional last epoch is kept out of the median epoch. The results
    index rebuilds the same table, per CPU kind, from the side files the benchmark leaves."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import peer
    import results_table

    def run(side, seed, seconds, accuracy, epochs, others, load=0.2, planned=None):
        return peer.describe(
            {
                "side": side,
                "seed": seed,
                "epochs": len(epochs),
                "planned_epochs": planned or len(epochs),
                "epoch_seconds": epochs,
                "others_cpu": others,
                "training_seconds": seconds,
                "accuracy": accuracy,
                "load_before": load,
                "cpu": {"model": "AMD EPYC", "family": "25", "model_number": "1", "flags": ["avx2", "fma"]},
            }
        )

    runs = [
        run("ours (fast)", 0, 400, 0.907, [48] * 4 + [52] * 4, [0.01] * 8),
        run("peer (airbench94)", 0, 500, 0.906, [52] * 9 + [47], [0.0] * 10, planned=9.9),
        run("ours (fast)", 1, 900, 0.909, [110] * 8, [0.01] * 7 + [0.4]),  # another job shared the cores
        run(
            "peer (airbench94)", 1, 520, 0.904, [53] * 9 + [48], [0.02] * 10, load=3.0, planned=9.9
        ),  # started on a busy machine
    ]
    assert runs[1]["median_epoch_seconds"] == 52 and runs[1]["images_per_second"] == 50_000 / 52
    assert runs[0]["median_epoch_seconds"] == 50  # whole epochs: the last one counts
    assert [r["idle"] for r in runs] == [True, True, False, False]
    for accuracy in (0.1, float("nan")):  # a peer whose whitening filters came out NaN trained at chance
        with pytest.raises(SystemExit, match="diverged"):
            peer.check_trained({**runs[1], "accuracy": accuracy})
    peer.check_trained(runs[1])
    summary = results_table.peer_summary(runs)
    assert summary["time_ratio"] == 400 / 500  # the busy runs are left out
    assert summary["ours (fast)"]["mean_accuracy"] == (0.907 + 0.909) / 2  # accuracy does not depend on load
    table = results_table.peer_table(runs)
    assert table.count("(busy)") == 2 and "| peer (airbench94) | 1 | 9.9 | 53.0 |" in table
    assert "| **ours (fast), mean** | 2 runs, 1 idle | | | | **90.80 ± 0.14 %** | **400** |" in table
    assert table.endswith("ours / peer mean training time (idle runs only): **0.80**")
    # No ratio, and why: every run of a side on a busy machine, or a side that never ran.
    assert results_table.peer_table([runs[0], runs[3]]).endswith("no ratio: a side has no idle run")
    assert results_table.peer_table(runs[:1]).endswith("no ratio: no run of peer here")

    pair = tmp_path / "results" / "cpu" / "pair"
    pair.mkdir(parents=True)
    for r in runs:
        (pair / f"{r['side'].split()[0]}-s{r['seed']}.summary.json").write_text(json.dumps(r))
    (pair / "summary.json").write_text("{}")  # the whole report, not a side: left alone
    readme = tmp_path / "results" / "README.md"
    readme.write_text(f"{results_table.INDEX_START}\n{results_table.INDEX_END}\n")
    results_table.write_index(tmp_path / "results")
    heading = "### AMD EPYC, family 25 model 1: avx2, fma: `cpu/pair`, the fast recipe beside the real peer"
    assert f"{heading}\n\n{table}\n" in readme.read_text()


def test_an_ablation_table_says_what_each_change_did_from_committed_runs(monkeypatch, capsys):
    """The jitter ablation's table as its README builds it: accuracy with TTA, after the last epoch without TTA
    (each run's timing.json) and training time, where a run that shared the cores is left out of the time."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import results_table

    cpu = REPO / "results" / "cpu"
    recipe = [cpu / "peer-vs-fast-zen3" / f"ours-s{seed}" for seed in range(3)]
    jitter = [cpu / "fast-jitter-zen3" / f"fast-jitter-s{seed}" for seed in range(3)]
    results_table.ablation_table([results_table.row(path) for path in recipe + jitter], "fast")
    lines = capsys.readouterr().out.splitlines()

    def last_epoch(path):
        return 100 * json.loads((path / "timing.json").read_text())["epochs"][-1]["test_accuracy"]

    seconds = [json.loads((path / "metrics.json").read_text())["training"]["training_seconds"] for path in jitter]
    jitter_row = next(line for line in lines if line.startswith("| `brightness: 0.035`, `contrast: 0.13` |"))
    assert f"| {sum(map(last_epoch, jitter)) / 3:.2f} % (3) |" in jitter_row
    assert jitter_row.endswith(f"| {(seconds[1] + seconds[2]) / 2:,.0f} s (2) |")  # seed 0 shared the cores
    assert (
        lines[2].startswith("| none: `--recipe fast` | 3 |") and f"{sum(map(last_epoch, recipe)) / 3:.2f} %" in lines[2]
    )
