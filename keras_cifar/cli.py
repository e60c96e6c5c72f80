"""What every `python -m keras_cifar.*` entry point shares: user errors printed plainly, non-zero exit."""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lines) hides the run's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main, argv=None) -> int:
    """Call `main(argv)` and return its exit status (None = 0); a KerasCifarError becomes one line on stderr and
    exit status 2, not a traceback."""
    from keras_cifar.errors import KerasCifarError

    try:
        return main(argv) or 0
    except KerasCifarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue from the last finished epoch", file=sys.stderr)
        return 130
