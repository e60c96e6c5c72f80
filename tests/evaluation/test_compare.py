"""The comparison report and the suite: every table and figure, seeds grouped, data never mixed, resume."""

import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO, tiny

from keras_cifar import cli, compare, suite
from keras_cifar.evaluation.compare import Group, compare_pair
from keras_cifar.models import build_model
from keras_cifar.models.flops import flops_per_image

TINY = tiny(epochs=1, test=200, quiet=True)


@pytest.fixture(scope="module")
def suite_dir(cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    suite.main(["--archs", "resnet18,airbench", "--seeds", "2", "--out", str(out), *TINY, "--data-dir", str(cifar_dir)])
    return out


@pytest.mark.slow
def test_suite_trains_every_arch_and_seed_and_reports(suite_dir):
    runs = sorted(p.name for p in (suite_dir / "runs").iterdir())
    assert runs == ["airbench-s0", "airbench-s1", "resnet18-s0", "resnet18-s1"]
    report = (suite_dir / "report" / "report.md").read_text()
    for heading in (
        "test acc %",
        "macro F1",
        "GFLOPs/img",
        "CPU latency ms",
        "Best under each criterion",
        "What each architecture is good and bad at",
        "Seeds: is a difference real?",
        "Every run",
        "Validation curves",
        "Per-class F1",
        "Confusion matrices",
        "Accuracy against size and latency",
        "Most-confused class pairs",
    ):
        assert heading in report, heading
    assert "| resnet18 | 2 |" in report and " ± " in report  # two seeds -> one row with a spread
    assert "`python -m keras_cifar.suite --archs resnet18,airbench --seeds 2" in report  # the command, as given
    assert "Welch t-test" in report
    html = (suite_dir / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "src='http" not in html  # self-contained


@pytest.mark.slow
def test_different_test_sets_are_never_mixed(suite_dir, cifar_dir, tmp_path, capsys):
    other = tmp_path / "other-test-set"
    from keras_cifar import train

    train.main(
        [
            *tiny("resnet18", epochs=1, test=100, quiet=True),
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(other),
        ]
    )
    out = tmp_path / "report"
    assert cli.run(compare.main, [str(suite_dir / "runs"), str(other), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "2 different data sets, test sets or TTA settings" in report
    assert "## Section 1" in report and "## Section 2" in report
    assert "200 test images" in report and "100 test images" in report


def test_compare_names_a_folder_that_holds_no_runs(tmp_path, capsys):
    assert cli.run(compare.main, [str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


class FakeRun:
    def __init__(self, accuracy):
        self.accuracy = accuracy


def group(label, *accuracies):
    return Group(label, [FakeRun(a) for a in accuracies], [{} for _ in accuracies])


def test_a_difference_is_judged_against_the_seed_spread():
    clear = compare_pair(group("a", 0.90, 0.901, 0.899), group("b", 0.80, 0.801, 0.799))
    assert clear["larger_than_spread"] and clear["p_value"] < 0.05
    noise = compare_pair(group("a", 0.90, 0.92, 0.88), group("b", 0.905, 0.885, 0.915))
    assert noise["larger_than_spread"] is False
    one_side = compare_pair(group("a", 0.90, 0.91), group("b", 0.85))
    assert one_side["test"] == "2 x seed std" and one_side["larger_than_spread"]
    assert compare_pair(group("a", 0.9), group("b", 0.8))["larger_than_spread"] is None


def test_strengths_and_weaknesses_rank_each_net_among_the_others():
    """Three nets: the accurate slow big one, a middle one, the small fast weak one; each told its place."""
    from types import SimpleNamespace

    from keras_cifar.evaluation.comparison_report import strengths_and_weaknesses

    classes = [f"c{i}" for i in range(10)]

    def net(label, accuracy, seconds, params, latency, confused_with):
        confusion = [[90 if t == p else 0 for p in range(10)] for t in range(10)]
        confusion[3][confused_with] = 10
        run = SimpleNamespace(
            accuracy=accuracy,
            training={"training_seconds": seconds, "train_images_per_second": 50_000 / seconds},
            metrics={"confusion_matrix": confusion},
        )
        return Group(label, [run], [{"parameters": params, "flops": 2 * params, "latency_ms": latency}])

    lines = strengths_and_weaknesses(
        [
            net("big", 0.90, 600, 20e6, 9.0, 5),
            net("middle", 0.85, 300, 5e6, 4.0, 5),
            net("small", 0.70, 100, 1e6, 1.0, 2),
        ],
        classes,
    )
    big, middle, small = lines
    assert big.startswith("**big**: good at accuracy (90.00 %, 1st of 3); weak at ")
    assert "CPU latency (9.00 ms, 3rd of 3)" in big and "confuses most c3 → c5 (10)" in big
    assert "accuracy per training minute (42.00 points/min, 1st of 3)" in small.split("; weak at")[0]
    assert "accuracy (70.00 %, 3rd of 3)" in small.split("; weak at")[1]
    assert "good at nothing in particular; weak at nothing in particular" in middle
    assert "calibration" not in big  # not measured: not ranked


def test_flops_match_a_hand_count():
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", groups=2)(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    expected = 2 * (3 * 3 * 3 * 4 * 32 * 32 + 3 * 3 * 2 * 8 * 16 * 16 + 8 * 10)
    assert flops_per_image(keras.Model(inputs, outputs)) == expected
    # ResNet-18 on CIFAR: 0.56 GMACs per image (kuangliu's count), 2 FLOPs each.
    assert abs(flops_per_image(build_model("resnet18")) / 1e9 - 1.11) < 0.03


@pytest.mark.slow
def test_a_killed_suite_continues_and_keeps_finished_runs(cifar_dir, tmp_path):
    out = tmp_path / "suite"
    command = [
        sys.executable,
        "-m",
        "keras_cifar.suite",
        "--archs",
        "resnet18",
        "--seeds",
        "2",
        "--out",
        str(out),
        *TINY,
        "--epochs",
        "3",
        "--data-dir",
        str(cifar_dir),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "runs" / "resnet18-s0" / "metrics.json"
    second_history = out / "runs" / "resnet18-s1" / "history.csv"
    deadline = time.time() + 300
    while not (second_history.is_file() and len(second_history.read_text().splitlines()) >= 2):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_at = first.stat().st_mtime
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resnet18-s0: finished earlier, kept" in result.stdout
    assert "Continuing the unfinished run" in result.stdout
    assert first.stat().st_mtime == finished_at
    assert len((out / "runs" / "resnet18-s1" / "history.csv").read_text().splitlines()) == 4  # header + 3 epochs
    assert (out / "report" / "report.html").is_file()
