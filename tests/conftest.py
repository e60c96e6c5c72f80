"""Shared fixtures: the one local CIFAR-10 copy the tests read, loaded once per session."""

import os
from pathlib import Path

import pytest

from keras_cifar.data.sources import Cifar10, load_cifar10

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def float32_policy():
    """Training sets Keras's global dtype policy for the host (bfloat16 on some CPUs); each test starts clean."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The shared copy; skipped where it is absent, but CI always has it, so there its absence is a failure."""
    path = Path(os.environ.get("KERAS_CIFAR_TEST_DATA") or REPO.parent / "shared" / "data" / "cifar10")
    if not path.is_dir():
        message = f"CIFAR-10 test copy not found at {path}; set KERAS_CIFAR_TEST_DATA to a folder holding one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def cifar(cifar_dir) -> Cifar10:
    """Loaded once through the same code path a user's copy takes, so every test file can share it."""
    return load_cifar10(cifar_dir)


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
