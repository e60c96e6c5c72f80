"""What every `python -m keras_cifar.*` entry point shares: user errors printed plainly, non-zero exit."""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import signal
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


def parser(prog: str, description: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """Every command's argument parser: the same --version everywhere."""
    from keras_cifar import __version__

    parser = argparse.ArgumentParser(prog=prog, description=description, **kwargs)
    parser.add_argument("--version", action="version", version=f"keras-cifar {__version__}")
    return parser


def require_extra(extra: str, *modules: str) -> None:
    """A clear error, not an ImportError traceback, when a command's optional dependencies are not installed."""
    import importlib.util

    from keras_cifar.errors import ConfigError

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f'this command needs {", ".join(missing)}, which are not installed: pip install "keras-cifar[{extra}]"'
        )


def on_terminal(stream=None) -> bool:
    """Whether output goes to a person at a terminal (progress bars) rather than a log file or a pipe (lines)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def add_model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """--model and --format, as predict and serve take them (`export.runtime.open_model` reads them)."""
    from keras_cifar.export.formats import FORMATS

    parser.add_argument(
        "--model",
        required=True,
        help="an export folder (`python -m keras_cifar.export`), a run directory or a .keras file (these two run "
        "on Keras and TensorFlow)",
    )
    parser.add_argument(
        "--format",
        default=None,
        choices=list(FORMATS),
        help=f"which exported file to {verb} (default: tflite-float32 if present, else savedmodel)",
    )


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: the kernel sends it SIGTERM when the parent dies, however it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def dies_with_this_process():
    """A `preexec_fn` for `subprocess.Popen` that ends the child with this process (Linux; None elsewhere), so a
    killed launcher or suite never leaves a child training on, holding its run."""
    return functools.partial(_die_with_parent, os.getpid()) if sys.platform == "linux" else None
