"""Hyper-parameter search: spaces and their checks, a killed search resumed, a chief with two workers, a killed
worker. Trials are ResNet-18/airbench at width 0.125 on 256 training images for one epoch."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras_tuner
import pytest
from helpers import REPO, python_m, tiny

from keras_cifar.config import TrainConfig, read_config_file
from keras_cifar.errors import ConfigError
from keras_cifar.models.registry import MODELS
from keras_cifar.run import RunLockedError, folder_lock
from tuning import search
from tuning.hypermodel import CifarHyperModel
from tuning.space import SPACES, declare, resolve_space

TINY = tiny(epochs=1)


def write_space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def trials(project_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in Path(project_dir).glob("trial_*/trial.json")}


def ongoing_trials(project_dir) -> dict:
    """The oracle's tuner id -> trial id of the trials running now (empty while oracle.json is being written)."""
    try:
        return json.loads((Path(project_dir) / "oracle.json").read_text()).get("ongoing_trials", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Spaces


def test_every_architecture_has_a_valid_space():
    assert {entry.family for entry in MODELS.values()} <= set(SPACES)  # a family without a space is a typo
    for arch in MODELS:
        space = resolve_space(TrainConfig(arch=arch))
        assert {"lr", "weight_decay", "batch_size", "dropout", "width_multiplier"} <= set(space.entries), arch


def test_a_trial_gets_its_optimizers_ranges():
    space = resolve_space(TrainConfig(arch="resnet18"))
    for optimizer, highest_lr in (("sgd", 0.4), ("adamw", 3e-3)):
        hp = keras_tuner.HyperParameters()
        hp.values["optimizer"] = optimizer
        values = declare(space, hp)
        assert values["optimizer"] == optimizer and values["lr"] <= highest_lr
        TrainConfig(**values).validate()


def test_the_fast_nets_search_muon_with_its_filter_lr_only_under_muon(tmp_path):
    space = resolve_space(TrainConfig(arch="airbench"))
    for optimizer in ("sgd", "muon"):
        hp = keras_tuner.HyperParameters()
        hp.values["optimizer"] = optimizer
        values = declare(space, hp)
        assert values["optimizer"] == optimizer and ("muon_lr" in values) == (optimizer == "muon")
        TrainConfig(**values).validate()
    narrowed = resolve_space(TrainConfig(arch="airbench"), write_space(tmp_path, "optimizer: {values: [sgd]}\n"))
    assert "muon_lr" not in narrowed.entries and "optimizer" in narrowed.entries


def test_settings_typed_on_the_command_line_are_fixed():
    space = resolve_space(
        TrainConfig(arch="resnet18", optimizer="adamw"), fixed_names=["width_multiplier", "optimizer"]
    )
    assert "width_multiplier" not in space.entries and "optimizer" not in space.entries
    assert space.entries["lr"]["max"] == 3e-3  # only AdamW's range is left


def test_a_space_file_can_narrow_the_optimizer_choice(tmp_path):
    space = resolve_space(
        TrainConfig(arch="resnet18", optimizer="sgd"), write_space(tmp_path, "optimizer: {values: [adamw]}\n")
    )
    assert space.entries["lr"] == {"min": 3e-4, "max": 3e-3, "sampling": "log"}


def test_a_space_file_merges_fixes_and_adds(tmp_path):
    path = write_space(
        tmp_path, "lr: {sgd: {max: 0.2}}\nbatch_size: 128\ndropout: null\nmomentum: {min: 0.8, max: 0.95}\n"
    )
    space = resolve_space(TrainConfig(arch="resnet18"), path)
    assert space.entries["lr"]["sgd"] == {"min": 0.02, "max": 0.2, "sampling": "log"}
    assert space.fixed == {"batch_size": 128} and "batch_size" not in space.entries
    assert "dropout" not in space.entries and space.entries["momentum"]["min"] == 0.8


@pytest.mark.parametrize(
    "text, message",
    [
        ("dropout: {min: 0.4, max: 0.1}", "'dropout' has min 0.4 greater than max 0.1"),
        ("learning_rate: {min: 0.1, max: 0.2}", "unknown setting 'learning_rate'. Did you mean 'lr'?"),
        ("dropuot: {min: 0.1, max: 0.2}", "unknown setting 'dropuot'. Did you mean 'dropout'?"),
        ("lr: {min: -0.1, max: 0.2}", "'lr' = -0.1 is not a valid setting: lr must be positive"),
        (
            "weight_decay: {min: 0, max: 0.1, sampling: log}",
            "'weight_decay' uses log sampling, so min must be positive",
        ),
        ("dropout: {values: [0.0, 1.5]}", "'dropout' = 1.5 is not a valid setting"),
        ("lr: {min: 0.1, max: 0.2, scale: log}", "'lr' has unknown field(s) ['scale']"),
        ("epochs: {values: [1, 2]}", "'epochs' is not searched; set it on the command line (--epochs)"),
        ("optimizer: {values: [sgd, lamb]}", "optimizer must be one of"),
    ],
)
def test_bad_space_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        resolve_space(TrainConfig(arch="resnet18"), write_space(tmp_path, text))
    assert message in str(err.value)


def test_bad_input_fails_before_anything_trains(tmp_path, cifar_dir):
    space = write_space(tmp_path, "lr: {min: 0.5, max: 0.1}\n")
    common = ["--arch", "resnet18", *TINY, "--data-dir", cifar_dir, "--directory", tmp_path / "d"]
    bad_space = python_m("tuning.search", *common, "--space", space)
    assert (
        bad_space.returncode == 2
        and "error:" in bad_space.stderr
        and "'lr' has min 0.5 greater than max 0.1" in bad_space.stderr
    )
    bad_tuner = python_m("tuning.search", *common, "--tuner", "grid")
    assert bad_tuner.returncode == 2
    assert "unknown tuner 'grid'. Choose one of: hyperband, bayesian, random" in bad_tuner.stderr
    assert not list((tmp_path / "d").glob("*/trial_*"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = python_m("tuning.launch", "--workers", "1", "--port", port, *common)
    assert taken.returncode == 2 and f"port {port} on 127.0.0.1 is already in use" in taken.stderr


# One process: killed, resumed, finished


@pytest.mark.slow
def test_a_killed_search_resumes_without_retraining_finished_trials(tmp_path, cifar_dir, monkeypatch):
    directory = tmp_path / "searches"
    flags = [
        "--arch",
        "resnet18",
        "--tuner",
        "random",
        "--max-trials",
        "2",
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--directory",
        str(directory),
        "--project-name",
        "p",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "tuning.search", *flags], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:  # kill it while trial 1 runs, trial 0 being finished
        deadline = time.time() + 300
        while "1" not in ongoing_trials(directory / "p").values():
            assert first.poll() is None and time.time() < deadline, "the search ended before its second trial"
            time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert trials(directory / "p")["trial_0"]["status"] == "COMPLETED"
    assert trials(directory / "p")["trial_1"]["status"] == "RUNNING"

    fits = []
    original_fit = CifarHyperModel.fit
    monkeypatch.setattr(
        CifarHyperModel, "fit", lambda self, hp, *a, **k: fits.append(1) or original_fit(self, hp, *a, **k)
    )
    search.main(flags)
    assert len(fits) == 1  # only the interrupted trial
    assert {t["status"] for t in trials(directory / "p").values()} == {"COMPLETED"}

    search.main(flags)  # finished: trains nothing, rewrites the outputs
    assert len(fits) == 1
    project = directory / "p"
    assert len((project / "trials.csv").read_text().splitlines()) == 3 and (project / "trials.png").stat().st_size

    best = project / "best_config.yaml"
    settings = read_config_file(best)
    assert "train_limit" not in settings and "data_dir" not in settings and settings["width_multiplier"] == 0.125
    assert "Left out" in best.read_text()
    from keras_cifar import train

    run_dir = tmp_path / "from-best"
    train.main(
        [
            "--config",
            str(best),
            "--epochs",
            "1",
            "--train-limit",
            "128",
            "--val-limit",
            "64",
            "--test-limit",
            "64",
            "--no-tensorboard",
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(run_dir),
        ]
    )
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert {k: saved[k] for k in ("lr", "batch_size", "optimizer")} == {
        k: settings[k] for k in ("lr", "batch_size", "optimizer")
    }


def test_a_project_only_continues_the_search_that_started_it(tmp_path):
    base = TrainConfig(arch="resnet18")
    space = resolve_space(base)
    search.check_same_search(tmp_path, base, space, "random")
    search.check_same_search(tmp_path, base, space, "random")
    with pytest.raises(ConfigError, match=r"other settings \(tuner\)"):
        search.check_same_search(tmp_path, base, space, "hyperband")
    with pytest.raises(ConfigError, match=r"other settings \(--lr\)"):
        search.check_same_search(tmp_path, TrainConfig(arch="resnet18", lr=0.05), space, "random")


# Distributed: a chief and two workers on loopback


class Launch:
    """`python -m tuning.launch` in the background, its output collected line by line."""

    def __init__(self, directory, port, *flags, workers=2):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuning.launch",
                "--workers",
                str(workers),
                "--port",
                str(port),
                "--directory",
                str(directory),
                "--project-name",
                "p",
                *map(str, flags),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    def pid(self, name):
        started = [line for line in list(self.lines) if line.startswith(f"launch: {name} started, pid ")]
        return int(started[-1].split()[-1]) if started else None

    def wait(self, timeout=300):
        try:
            status = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._reader.join(10)
        return status


def kill_mid_trial(run, project, worker):
    deadline = time.time() + 240
    while not (worker in ongoing_trials(project) and run.pid(worker)):  # the worker is inside a trial
        assert run.process.poll() is None and time.time() < deadline, "".join(run.lines)[-3000:]
        time.sleep(0.2)
    os.kill(run.pid(worker), signal.SIGKILL)


def check_every_trial_finished_once(project, count, launched=True):
    found = trials(project)
    assert len(found) == count and {t["status"] for t in found.values()} == {"COMPLETED"}
    run_times = json.loads((project / "oracle.json").read_text())["run_times"]
    assert run_times == {t["trial_id"]: 1 for t in found.values()}  # each ended exactly once
    TrainConfig(**read_config_file(project / "best_config.yaml")).validate()
    if launched:
        assert (project / "logs" / "chief.log").is_file() and (project / "logs" / "tuner0.log").is_file()


DISTRIBUTED = ["--arch", "airbench", "--tuner", "random", "--max-trials", "4", *TINY]


@pytest.mark.slow
def test_a_chief_and_two_workers_finish_every_trial_once(tmp_path, cifar_dir):
    run = Launch(tmp_path, free_port(), *DISTRIBUTED, "--data-dir", cifar_dir)
    assert run.wait() == 0, "".join(run.lines)[-3000:]
    check_every_trial_finished_once(tmp_path / "p", 4)
    output = "".join(run.lines)
    assert "[chief] best config:" in output and "[tuner0] " in output and "[tuner1] " in output


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_restarted_and_the_search_finishes(tmp_path, cifar_dir):
    run = Launch(tmp_path, free_port(), *DISTRIBUTED, "--data-dir", cifar_dir)
    kill_mid_trial(run, tmp_path / "p", "tuner0")
    assert run.wait() == 0, "".join(run.lines)[-3000:]
    check_every_trial_finished_once(tmp_path / "p", 4)
    assert any(
        "launch: tuner0 exited with status -9 before the search ended; starting it again" in line for line in run.lines
    )


@pytest.mark.slow
def test_a_worker_out_of_restarts_stops_the_launch_and_a_rerun_finishes_the_search(tmp_path, cifar_dir):
    flags = [
        "--arch",
        "airbench",
        "--tuner",
        "random",
        "--max-trials",
        "2",
        *TINY,
        "--data-dir",
        cifar_dir,
        "--max-restarts",
        "0",
    ]
    port = free_port()
    run = Launch(tmp_path, port, *flags, workers=1)
    kill_mid_trial(run, tmp_path / "p", "tuner0")
    assert run.wait() == 2
    assert any("error: a worker died more often than --max-restarts allows" in line for line in run.lines)
    rerun = Launch(tmp_path, port, *flags, workers=1)
    assert rerun.wait() == 0, "".join(rerun.lines)[-3000:]
    check_every_trial_finished_once(tmp_path / "p", 2)


def test_a_second_search_on_the_same_project_is_refused(tmp_path):
    base = TrainConfig(arch="resnet18", val_split=500)
    with folder_lock(tmp_path / "p", "search"), pytest.raises(RunLockedError, match=r"\(search\)"):
        search.run_search(base, tuner="random", max_trials=1, directory=tmp_path, project_name="p")
    assert not (tmp_path / "p" / "search.json").exists()  # refused before it touched the project


def test_hyperband_refuses_a_fraction_of_an_epoch(tmp_path):
    base = TrainConfig(arch="resnet18", val_split=500, epochs=2.5)
    with pytest.raises(ConfigError, match="hyperband trains whole epochs"):
        search.run_search(base, tuner="hyperband", max_trials=1, directory=tmp_path, project_name="p")
    assert not (tmp_path / "p").exists()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signals are Linux's")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_chief_and_workers_never_outlive_the_launcher(tmp_path, cifar_dir, how):
    run = Launch(tmp_path, free_port(), *DISTRIBUTED, "--data-dir", cifar_dir, workers=1)
    deadline = time.time() + 120
    while not (run.pid("chief") and run.pid("tuner0")):
        assert run.process.poll() is None and time.time() < deadline, "".join(run.lines)[-3000:]
        time.sleep(0.2)
    children = [run.pid("chief"), run.pid("tuner0")]
    assert all(alive(pid) for pid in children)
    run.process.send_signal(how)
    status = run.wait(60)
    deadline = time.time() + 60
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children)
    if how == signal.SIGTERM:
        assert status == 128 + signal.SIGTERM
        assert any("launch: stopped by SIGTERM" in line for line in run.lines)


@pytest.mark.slow
def test_a_search_killed_at_random_moments_ends_whole(tmp_path, cifar_dir, killed_at_random):
    """SIGKILL at two random moments, each followed by the same command: every trial ends exactly once and the
    outputs are written, never a refusal or a mixed project."""
    flags = ["--arch", "resnet18", "--tuner", "random", "--max-trials", "2", *TINY, "--data-dir", cifar_dir]
    flags += ["--directory", tmp_path, "--project-name", "p"]
    command = [sys.executable, "-m", "tuning.search", *map(str, flags)]
    for _ in range(2):
        killed_at_random(command, seconds=(2, 30))
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    check_every_trial_finished_once(tmp_path / "p", 2, launched=False)


@pytest.mark.slow
def test_a_search_logs_each_trial_to_tensorboard_with_its_hyperparameters(tmp_path, cifar_dir):
    flags = [flag for flag in TINY if flag != "--no-tensorboard"]
    search.main(["--arch", "resnet18", "--tuner", "random", "--max-trials", "1", *flags, "--data-dir", str(cifar_dir),
                 "--directory", str(tmp_path), "--project-name", "p"])  # fmt: skip
    events = list((tmp_path / "p" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard logs"
    assert any(b"hparams" in path.read_bytes() for path in events)  # the HParams plugin's summary
