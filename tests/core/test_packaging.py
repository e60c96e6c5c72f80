"""Every package the code imports is declared in setup.cfg, and what trains and evaluates needs only the base install."""

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions

from tests.helpers import REPO

# Imported only under the Keras backend a user picks with KERAS_BACKEND, which that user installs.
USER_BACKENDS = {"jax", "torch"}
# Training, evaluation and comparison: `pip install .` alone must run them.
BASE_CODE = ("data", "models", "training", "evaluation", "train.py", "evaluate.py", "compare.py", "suite.py")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str, set[str]]:
    """Declared distributions by extra; the base install under ''."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    sections = {"": config["options"]["install_requires"], **config["options.extras_require"]}
    return {
        extra: {canonical(re.match(r"[A-Za-z0-9_.-]+", line).group()) for line in lines.split("\n") if line.strip()}
        for extra, lines in sections.items()
    }


def imported(paths) -> dict[str, list[str]]:
    """Top-level third-party modules imported anywhere in `paths` (lazy imports too), with where."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("keras_cifar", "tuning", *USER_BACKENDS):
                    found.setdefault(top, []).append(str(path.relative_to(REPO)))
    return found


def distributions(module: str) -> set[str]:
    """The installed distributions that provide `module`; not installed here, its own name (as most are)."""
    return {canonical(d) for d in packages_distributions().get(module, [module])}


def python_files(*roots):
    return [f for root in roots for f in (sorted(root.rglob("*.py")) if root.is_dir() else [root])]


def test_every_imported_package_is_declared():
    declared = set().union(*requirements().values())
    code = python_files(REPO / "keras_cifar", REPO / "tuning")
    undeclared = {m: where for m, where in imported(code).items() if not distributions(m) & declared}
    assert not undeclared, f"imported but not in setup.cfg (by module: files): {undeclared}"


def test_training_and_evaluation_need_only_the_base_install():
    base = requirements()[""]
    assert "tensorflow" in base  # `pip install .` alone trains: Keras needs its backend
    code = python_files(*(REPO / "keras_cifar" / part for part in BASE_CODE))
    extra_only = {m: where for m, where in imported(code).items() if not distributions(m) & base}
    assert not extra_only, f"training or evaluation imports a package outside the base install: {extra_only}"
