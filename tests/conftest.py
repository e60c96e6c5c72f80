"""Shared fixtures: a synthetic CIFAR-10 copy most tests read, the real one for the few that need it, and a tiny
trained and exported model."""

import os
import random
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from keras_cifar.data.sources import CLASS_NAMES, Cifar10, load_cifar10

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def float32_policy():
    """Training sets Keras's global dtype policy for the host (bfloat16 on some CPUs); each test starts clean."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def write_synthetic_copy(folder: Path, seed: int = 0) -> Path:
    """A CIFAR-10 copy in the official binary layout, made up: each class a colour and a stripe frequency under
    noise, so a small net learns it in a few hundred steps. 50,000 + 10,000 balanced images, as the loader demands.
    """
    rng = np.random.default_rng(seed)
    out = folder / "cifar-10-batches-bin"
    out.mkdir(parents=True)
    colours = rng.integers(60, 196, size=(10, 1, 1, 3))
    rows = np.arange(32)[None, :, None, None]
    stripes = 40 * np.sin(2 * np.pi * (np.arange(10)[:, None, None, None] + 1) * rows / 32)  # (10, 32, 1, 1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.permutation(np.arange(10_000) % 10)
        noise = rng.integers(-50, 51, size=(10_000, 32, 32, 3))
        images = np.clip(colours[labels] + stripes[labels] + noise, 0, 255).astype(np.uint8)
        planar = images.transpose(0, 3, 1, 2).reshape(10_000, 3072)
        (out / name).write_bytes(np.concatenate([labels[:, None].astype(np.uint8), planar], axis=1).tobytes())
    (out / "batches.meta.txt").write_text("\n".join(CLASS_NAMES) + "\n\n")
    return folder


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """The data most tests read: a synthetic copy, through the same loader as a user's (`write_synthetic_copy`)."""
    return write_synthetic_copy(tmp_path_factory.mktemp("synthetic-cifar10"))


@pytest.fixture(scope="session")
def cifar(cifar_dir) -> Cifar10:
    """Loaded once, so every test file can share it."""
    return load_cifar10(cifar_dir)


@pytest.fixture(scope="session")
def real_cifar_dir() -> Path:
    """The real images, for the tests whose claims only they can check (marked needs_data). Skipped where there
    is no copy, but CI always has one, so there its absence is a failure."""
    path = Path(os.environ.get("KERAS_CIFAR_TEST_DATA") or REPO.parent / "shared" / "data" / "cifar10")
    if not path.is_dir():
        message = f"CIFAR-10 test copy not found at {path}; set KERAS_CIFAR_TEST_DATA to a folder holding one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_collection_modifyitems(config, items):
    parallel = config.pluginmanager.hasplugin("xdist")
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "real_cifar_dir" in fixtures:
            item.add_marker(pytest.mark.needs_data)
        if {"trained_run", "exported"} & set(fixtures):
            item.add_marker(pytest.mark.slow)  # training and exporting the shared model takes a minute
        if parallel and {"trained_run", "exported"} & set(fixtures):
            # One worker trains and exports the shared tiny model and runs every test of it, instead of each
            # worker building its own (`pytest -n 2 --dist loadgroup`).
            item.add_marker(pytest.mark.xdist_group("exported-model"))


@pytest.fixture(scope="session")
def trained_run(cifar_dir, tmp_path_factory) -> Path:
    """A tiny airbench run (its custom layers, mixed precision where the host picks it) for export and serving."""
    from keras_cifar import train

    run_dir = tmp_path_factory.mktemp("trained") / "airbench-tiny"
    train.main(
        [
            "--arch",
            "airbench",
            "--width-multiplier",
            "0.25",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--train-limit",
            "512",
            "--val-limit",
            "128",
            "--test-limit",
            "200",
            "--no-tensorboard",
            "--data-dir",
            str(cifar_dir),
            "--run-dir",
            str(run_dir),
        ]
    )
    return run_dir


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory) -> Path:
    """Every export format of `trained_run`, checked on 200 test images."""
    from keras_cifar.export.__main__ import main

    out = tmp_path_factory.mktemp("exported_models") / "airbench-tiny"
    main([str(trained_run), "--out", str(out), "--test-limit", "200", "--calibration-images", "64"])
    return out


@pytest.fixture
def killed_at_random():
    """`kill(command, seconds=(low, high))`: run a command from the repo and SIGKILL it at a seeded random moment in
    that window (unless it ends first); its return code, which must be 0 or the kill's (its stderr otherwise)."""
    rng = random.Random(13)

    def kill(command, seconds):
        process = subprocess.Popen(
            [str(part) for part in command], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            process.wait(rng.uniform(*seconds))
        except subprocess.TimeoutExpired:
            process.kill()
        _, stderr = process.communicate()
        assert process.returncode in (0, -signal.SIGKILL), stderr[-2000:]
        return process.returncode

    return kill
