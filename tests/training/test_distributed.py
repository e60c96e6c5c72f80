"""`--strategy`: two workers on 127.0.0.1 training as one, MirroredStrategy on the one CPU, bad cluster settings."""

import csv
import json
import os
import re
import socket
import subprocess
import sys

import pytest
from helpers import REPO, tiny

from keras_cifar import cli, train
from keras_cifar.config import TrainConfig
from keras_cifar.errors import ConfigError
from keras_cifar.training import distribute

# 128 images in global batches of 64: 2 steps per epoch, each worker's replica taking 32 images of a batch.
FLAGS = {"epochs": 2, "batch": 64, "train": 128, "val": 64, "test": 64}
TINY = [*tiny("resnet18", **FLAGS), "--precision", "float32"]
SUMMARY = re.compile(r"worker (\d) \((chief|worker)\): (\d+) training steps; weights checksum ([\d.]+)")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(addresses, index):
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


@pytest.fixture(scope="module")
def two_workers(cifar_dir, tmp_path_factory):
    """One multi-worker run: worker 0 (the chief) and worker 1 as separate processes on loopback."""
    root = tmp_path_factory.mktemp("multiworker")
    scratch = root / "tmp"  # the workers' TMPDIR, to see that no scratch directory is left behind
    scratch.mkdir()
    run_dir = root / "run"
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = [
        sys.executable,
        "-m",
        "keras_cifar.train",
        *TINY,
        "--strategy",
        "multiworker",
        "--data-dir",
        str(cifar_dir),
        "--run-dir",
        str(run_dir),
    ]
    workers = [
        subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CONFIG": tf_config(addresses, index), "TMPDIR": str(scratch)},
        )
        for index in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    return run_dir, scratch, [(worker.returncode, out, err) for worker, (out, err) in zip(workers, outputs)]


@pytest.mark.slow
def test_two_workers_step_together(two_workers):
    _, _, results = two_workers
    summaries = []
    for index, (returncode, out, err) in enumerate(results):
        assert returncode == 0, f"worker {index}: {err[-3000:]}"
        assert "2 replicas of 32 images" in out  # the global batch of 64, split over both workers
        assert out.count("2/2 - ") == 2  # Keras's per-epoch line: 2 steps in each of the 2 epochs
        summaries += SUMMARY.findall(out)
    assert [s[:2] for s in summaries] == [("0", "chief"), ("1", "worker")]
    # Each worker saw only half of every batch, so equal weights (batch-norm statistics included) after the
    # same number of steps mean every update was all-reduced over both: they stepped together.
    assert {s[2] for s in summaries} == {"4"}
    assert summaries[0][3] == summaries[1][3]


def test_only_the_chief_writes_a_whole_run_directory(two_workers):
    run_dir, scratch, results = two_workers
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock",
        "config.json",
        "confusion_matrix.png",
        "history.csv",
        "metrics.json",
        "mistakes.png",
        "model.keras",
        "reliability.png",
        "training_curves.png",
    ]
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert runtime["distribution"] == {
        "strategy": "multiworker",
        "replicas": 2,
        "workers": 2,
        "worker_index": 0,
        "role": "chief",
        "per_replica_batch": 32,
    }
    with (run_dir / "history.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]
    assert json.loads((run_dir / "metrics.json").read_text())["num_test_images"] == 64
    _, worker_out, _ = results[1]
    assert f"run dir {scratch}" in worker_out and "on 64 test images" not in worker_out  # no report of its own
    assert list(scratch.iterdir()) == []  # its scratch directory is gone


def test_mirrored_strategy_on_one_cpu_with_the_fast_net_tricks(cifar_dir, tmp_path):
    """MirroredStrategy with its single CPU replica, with Lookahead, alternating flip and the whitening-bias
    freeze (which re-traces the train step) all running inside it."""
    run_dir = tmp_path / "mirrored"
    train.main(
        [
            *tiny("airbench", width=0.25, **FLAGS),
            "--precision",
            "float32",
            "--strategy",
            "mirrored",
            "--lookahead",
            "--alternating-flip",
            "--whiten-bias-epochs",
            "1",
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(run_dir),
        ]
    )
    runtime = json.loads((run_dir / "config.json").read_text())["runtime"]
    assert runtime["distribution"]["replicas"] == 1 and runtime["distribution"]["per_replica_batch"] == 64
    assert json.loads((run_dir / "metrics.json").read_text())["training"]["epochs_run"] == 2
    assert not (run_dir / "backup").exists()


@pytest.mark.slow
def test_jax_data_parallel_over_two_cpu_devices(cifar_dir, tmp_path):
    """Under JAX, `mirrored` is keras.distribution.DataParallel; XLA is asked for two CPU devices."""
    run_dir = tmp_path / "jax"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_cifar.train",
            *TINY,
            "--epochs",
            "1",
            "--strategy",
            "mirrored",
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(run_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas of 32 images" in result.stdout
    assert SUMMARY.search(result.stdout).group(3) == "2"
    assert json.loads((run_dir / "config.json").read_text())["runtime"]["distribution"]["replicas"] == 2
    assert (run_dir / "metrics.json").is_file()


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "TF_CONFIG environment variable, which is not set"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "list of host:port addresses"),
        (
            '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
            "only 'worker' jobs",
        ),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "from 0 to 1"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "task"),
    ],
)
def test_a_bad_tf_config_is_named(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        distribute.cluster_from_tf_config()


def test_multiworker_without_tf_config_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cli.run(train.main, [*TINY, "--strategy", "multiworker", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --strategy multiworker reads the cluster from the TF_CONFIG") and "Traceback" not in err
    )


def test_the_global_batch_must_split_evenly():
    assert distribute.Distribution("mirrored", replicas=4).per_replica_batch(128) == 32
    with pytest.raises(ConfigError, match="must divide evenly over the 3 replicas"):
        distribute.Distribution("mirrored", replicas=3).per_replica_batch(128)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({}, "needs --run-dir"),
        ({"run_dir": "r", "time_budget": 5.0}, "--time-budget cannot be used"),
    ],
)
def test_multiworker_settings_that_workers_could_not_agree_on(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(strategy="multiworker", **settings).validate()
