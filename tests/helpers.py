"""What many tests share: the repository root, the flags of a seconds-long training, and running an entry point
the way a user does."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny(arch=None, width=0.125, epochs=2, batch=64, train=256, val=128, test=None, *, quiet=False) -> list[str]:
    """Training flags for a narrow net on a few images: a run of seconds that still goes through everything."""
    flags = ["--arch", arch] if arch else []
    flags += ["--width-multiplier", str(width), "--epochs", str(epochs), "--batch-size", str(batch)]
    flags += ["--train-limit", str(train), "--val-limit", str(val)]
    flags += ["--test-limit", str(test)] if test else []
    flags += ["--no-tensorboard"] + (["--verbose", "0"] if quiet else [])
    return flags


def python_m(module, *args, env=None, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repository, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        **kwargs,
    )
