"""Imports flow one way, and the light entry points load no TensorFlow or Keras."""

import subprocess
import sys
from pathlib import Path

import pytest

LIGHT_MODULES = (
    "keras_cifar.config",
    "keras_cifar.models",
    "keras_cifar.run",
    "keras_cifar.export.formats",
    "keras_cifar.export.runtime",
    "keras_cifar.predict",
    "keras_cifar.serve",
    "keras_cifar.train",
    "keras_cifar.evaluate",
    "keras_cifar.compare",
    "keras_cifar.suite",
    "keras_cifar.export.__main__",
    "tuning.search",
)


def heavy_modules_after(code: str) -> list[str]:
    probe = code + "\nimport sys\nprint(' '.join(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_no_framework(module):
    assert heavy_modules_after(f"import {module}") == []


def test_naming_and_resolving_architectures_loads_no_framework():
    """A config names its net, the suite plans all of them, and `--list-archs` lists them, before any training."""
    code = (
        "from keras_cifar.config import parse_train_args, resolve_config\n"
        "from keras_cifar.models import available_models, expand_names\n"
        "from keras_cifar.models.registry import family\n"
        "assert expand_names('classic,airbench')[-1] == 'airbench' and 'googlenet' in available_models()\n"
        "assert family('GoogLeNet') == 'inception'\n"
        "assert resolve_config(parse_train_args(['--arch', 'GoogLeNet'])).erasing == 0.5  # inception.yaml, by its alias"
    )
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize(
    "entry", ("keras_cifar.train", "keras_cifar.predict", "keras_cifar.serve", "keras_cifar.export")
)
def test_help_loads_no_framework(entry):
    code = (
        f"import contextlib, io, runpy, sys\nsys.argv = ['{entry}', '--help']\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        runpy.run_module('{entry}', "
        "run_name='__main__')\n    except SystemExit:\n        pass"
    )
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize(
    "entry",
    (
        "keras_cifar.train",
        "keras_cifar.evaluate",
        "keras_cifar.compare",
        "keras_cifar.suite",
        "keras_cifar.export",
        "keras_cifar.predict",
        "keras_cifar.serve",
        "tuning.search",
        "tuning.launch",
    ),
)
def test_every_command_tells_its_version(entry):
    from keras_cifar import __version__

    out = subprocess.run([sys.executable, "-m", entry, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"keras-cifar {__version__}", out.stderr[-1000:]


def test_the_run_contract_imports_nothing_of_the_package_but_errors():
    source = Path("keras_cifar/run.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from keras_cifar", "import keras_cifar"))]
    assert imports == ["from keras_cifar.errors import CheckpointError, KerasCifarError"]


def test_no_module_imports_an_entry_point():
    """Entry points (`python -m` modules) sit on top: logic lives in the packages, so nothing imports them."""
    entry_points = ("train", "evaluate", "compare", "suite", "predict", "serve")
    found = subprocess.run(
        [
            "grep",
            "-rnE",
            rf"from keras_cifar\.({'|'.join(entry_points)}) import|"
            rf"import keras_cifar\.({'|'.join(entry_points)})\b",
            "keras_cifar",
            "tuning",
        ],
        capture_output=True,
        text=True,
    ).stdout
    assert found == ""


def test_a_missing_extra_is_named_with_its_install_command(monkeypatch):
    import importlib.util

    from keras_cifar import cli
    from keras_cifar.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "uvicorn" else real(name))
    with pytest.raises(ConfigError, match=r'needs uvicorn, .*pip install "keras-cifar\[serve\]"'):
        cli.require_extra("serve", "fastapi", "uvicorn")
    cli.require_extra("serve", "fastapi")
