"""Whole runs on a few hundred images: the run directory, evaluation, bad input, a killed run, JAX."""

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, python_m, tiny

from keras_cifar import cli, evaluate, train
from keras_cifar.errors import CheckpointError, ConfigError, TrainingError
from keras_cifar.models.saving import load_model_file

TINY = tiny("resnet18", test=128)


def read_history(run_dir):
    with (Path(run_dir) / "history.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_run(cifar_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "quick"
    train.main([*TINY, "--data-dir", str(cifar_dir), "--run-dir", str(run_dir)])
    return run_dir


def test_a_run_directory_holds_every_output(quick_run):
    for name in (
        "config.json",
        "history.csv",
        "model.keras",
        "metrics.json",
        "confusion_matrix.png",
        "training_curves.png",
        "reliability.png",
        "mistakes.png",
        "tensorboard",
    ):
        if name == "tensorboard":
            assert not (quick_run / name).exists()  # --no-tensorboard was given
            continue
        assert (quick_run / name).stat().st_size > 0, name
    assert not (quick_run / "backup").exists()  # the crash backup goes once the run is complete

    saved = json.loads((quick_run / "config.json").read_text())
    assert saved["config"]["width_multiplier"] == 0.125 and saved["config"]["epochs"] == 2
    assert saved["runtime"]["precision"] in ("float32", "mixed_bfloat16") and saved["runtime"]["precision_reason"]
    assert saved["environment"]["backend"] == "tensorflow" and saved["environment"]["versions"]["keras"]
    assert saved["data"]["sizes"] == {"train": 256, "val": 128, "test": 128}

    history = read_history(quick_run)
    assert [int(r["epoch"]) for r in history] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "images_per_second"} <= set(history[0])

    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["num_test_images"] == 128
    assert 0.0 <= metrics["accuracy"] <= 1.0 and set(metrics["per_class"]) >= {"airplane", "truck"}
    assert metrics["training"]["epochs_run"] == 2 and metrics["arch"] == "resnet18"
    assert metrics["data_fingerprint"] == saved["data"]["fingerprint"]
    assert 0.0 <= metrics["calibration"]["ece"] <= 1.0 and "corruptions" not in metrics  # opt-in: evaluate's
    assert [m["confidence"] for m in metrics["confident_mistakes"]] == sorted(
        (m["confidence"] for m in metrics["confident_mistakes"]), reverse=True
    )


def test_drop_remainder_trains_whole_batches_only_and_a_fraction_of_an_epoch_stops_inside_it(cifar_dir, tmp_path):
    import keras

    run_dir = tmp_path / "drop"
    train.main(
        [
            *TINY,
            "--epochs",
            "1.5",
            "--train-limit",
            "250",
            "--drop-remainder",
            "--val-split",
            "0",  # no best-model selection: model.keras is the last epoch's
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(run_dir),
        ]
    )
    model = keras.saving.load_model(run_dir / "model.keras")  # compiled: the optimizer counts the steps
    # 250 images in batches of 64: three full ones an epoch, the 58 left skipped; 1.5 epochs are 5 of them.
    assert int(model.optimizer.iterations) == 5
    history = read_history(run_dir)
    assert [int(row["epoch"]) for row in history] == [0, 1]  # the short last epoch is recorded like the others
    assert float(history[-1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)  # where the 5-step schedule ends
    assert json.loads((run_dir / "config.json").read_text())["config"]["epochs"] == 1.5


def test_the_saved_model_takes_raw_pixels(quick_run, cifar):
    model = load_model_file(quick_run / "model.keras")
    probabilities = model.predict(cifar.x_test[:8].astype("float32"), verbose=0)
    assert probabilities.shape == (8, 10) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_a_finished_run_is_never_overwritten(quick_run, cifar_dir):
    with pytest.raises(ConfigError, match="finished run"):
        train.main([*TINY, "--data-dir", str(cifar_dir), "--run-dir", str(quick_run)])


def test_evaluate_rewrites_the_report_with_tta(quick_run, tmp_path):
    out = tmp_path / "eval"
    evaluate.main([str(quick_run), "--tta", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "flip" and metrics["num_test_images"] == 128  # the run's own --test-limit
    assert (out / "confusion_matrix.png").stat().st_size > 10_000


def test_evaluate_measures_accuracy_under_common_corruptions(quick_run, tmp_path, capsys):
    out = tmp_path / "eval"
    evaluate.main([str(quick_run), "--corruptions", "64", "--out", str(out)])
    corruptions = json.loads((out / "metrics.json").read_text())["corruptions"]
    assert corruptions["images"] == 64 and set(corruptions["by_corruption"]) == {
        "gaussian_noise",
        "gaussian_blur",
        "contrast",
        "brightness",
        "pixelate",
        "jpeg",
    }
    assert all(len(row) == 5 for row in corruptions["by_corruption"].values())
    assert "common corruptions on 64 test images" in capsys.readouterr().out
    assert cli.run(evaluate.main, [str(quick_run), "--corruptions", "-1", "--out", str(out)]) == 2


def test_a_corrupt_model_file_is_named(tmp_path, cifar_dir, capsys):
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert cli.run(evaluate.main, [str(broken), "--data-dir", str(cifar_dir)]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "corrupt" in err and "Traceback" not in err


def test_a_missing_data_folder_says_what_to_do(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.run(train.main, [*TINY, "--data-dir", str(missing), "--run-dir", str(tmp_path / "r")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_unknown_arch_lists_the_choices():
    result = python_m("keras_cifar.train", "--arch", "nope")
    assert result.returncode == 2
    assert "Unknown architecture 'nope'" in result.stderr and "resnet18" in result.stderr and "vgg19" in result.stderr
    assert "Traceback" not in result.stderr


def test_nan_loss_stops_the_run_with_a_message(cifar_dir, tmp_path):
    with pytest.raises(TrainingError, match="NaN"):
        train.main(
            [
                *TINY,
                "--lr",
                "1e30",
                "--schedule",
                "constant",
                "--data-dir",
                str(cifar_dir),
                "--run-dir",
                str(tmp_path / "nan"),
            ]
        )


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(cifar_dir, tmp_path):
    run_dir = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "keras_cifar.train",
        *TINY,
        "--epochs",
        "4",
        "--train-limit",
        "512",
        "--data-dir",
        str(cifar_dir),
        "--run-dir",
        str(run_dir),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = run_dir / "backup" / "current" / "training_metadata.json"
    deadline = time.time() + 300
    while not metadata.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(metadata.read_text())["epoch"]
    assert 1 <= done < 4, "the run should have been killed mid-way"

    # A broken backup is reported, never silently trained over (checked on a copy of the killed run).
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(run_dir), str(broken)], check=True)
    for weights in (broken / "backup").rglob("*.weights.h5"):
        weights.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="delete that folder"):
        train.main(
            [*TINY, "--epochs", "4", "--train-limit", "512", "--data-dir", str(cifar_dir), "--run-dir", str(broken)]
        )

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"from epoch {done + 1}" in again.stdout
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [0, 1, 2, 3]
    assert (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_training_runs_under_jax(cifar_dir, tmp_path):
    run_dir = tmp_path / "jax"
    result = python_m(
        "keras_cifar.train",
        *TINY,
        "--epochs",
        "1",
        "--data-dir",
        cifar_dir,
        "--run-dir",
        run_dir,
        env={"KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["environment"]["backend"] == "jax"
    assert saved["runtime"]["augment_in_model"] is True and saved["runtime"]["jit_compile"] is True
    assert json.loads((run_dir / "metrics.json").read_text())["num_test_images"] == 128


@pytest.mark.slow
def test_a_time_budget_sets_the_epochs(cifar_dir, tmp_path):
    run_dir = tmp_path / "budget"
    train.main([*TINY, "--time-budget", "0.25", "--data-dir", str(cifar_dir), "--run-dir", str(run_dir)])
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert runtime["seconds_per_step"] > 0 and runtime["epochs"] >= 1
    assert runtime["epochs"] * 10 == pytest.approx(round(runtime["epochs"] * 10))  # in tenths of an epoch
    assert len(read_history(run_dir)) == math.ceil(runtime["epochs"])  # a short last epoch is recorded too


@pytest.mark.slow
def test_a_run_killed_at_random_moments_ends_whole(cifar_dir, tmp_path, killed_at_random):
    """SIGKILL at three random moments (start-up, an epoch, a checkpoint write, the report...), each followed by
    the same command: the run ends finished and whole, never refused as corrupt."""
    run_dir = tmp_path / "run"
    command = [*TINY, "--epochs", "3", "--train-limit", "512", "--data-dir", cifar_dir, "--run-dir", run_dir]
    for _ in range(3):
        if killed_at_random([sys.executable, "-m", "keras_cifar.train", *command], seconds=(2, 25)) == 0:
            break
        if (run_dir / "metrics.json").exists():  # killed on its way out, after the run was finished
            break
    if not (run_dir / "metrics.json").exists():
        again = python_m("keras_cifar.train", *command)
        assert again.returncode == 0, again.stderr[-2000:]
    assert [int(r["epoch"]) for r in read_history(run_dir)] == [0, 1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] >= 0
    assert load_model_file(run_dir / "model.keras").count_params() > 0
