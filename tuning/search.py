"""`python -m tuning.search --arch resnet18 --tuner hyperband --max-trials 20`: a Keras Tuner search over one
architecture's space, resumable (re-run the same command) and distributable (see `tuning.launch`).

Every training flag of `keras_cifar.train` is accepted and sets the search's base config; a setting typed on the
command line is fixed, not searched. The search writes, into DIRECTORY/PROJECT: KerasTuner's trial folders,
trials.csv, trials.png and best_config.yaml (a `keras_cifar.train --config` file).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

from keras_cifar import cli
from keras_cifar.config import settings
from keras_cifar.run import folder_lock, read_json, write_json

TUNERS = ("hyperband", "bayesian", "random")
# The search selects on validation accuracy; without early stopping a trial's best epoch would still be chosen,
# but a trial that stopped improving would keep using the CPU.
SEARCH_PATIENCE = 3


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.parser(
        prog="python -m tuning.search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from keras_cifar.config import add_config_arguments

    add_config_arguments(parser)
    group = parser.add_argument_group("search")
    group.add_argument("--tuner", default="hyperband", help=f"search algorithm: {', '.join(TUNERS)}")
    group.add_argument(
        "--max-trials",
        type=int,
        default=20,
        help="trials to run; Hyperband: the cap on its trials, --epochs being its max_epochs",
    )
    group.add_argument("--directory", default="runs/search", help="where search projects live")
    group.add_argument("--project-name", default=None, help="the search's folder in --directory (default: --arch)")
    group.add_argument("--space", default=None, help="YAML file changing the architecture family's search space")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cli.require_extra("tune", "keras_tuner", "grpc")
    from keras_cifar.config import FIELDS, resolve_config

    typed = [name for name in vars(args) if name in FIELDS]
    base = resolve_config(args)
    if "early_stopping_patience" not in typed and not base.early_stopping_patience:
        base = dataclasses.replace(base, early_stopping_patience=SEARCH_PATIENCE)
    best = run_search(
        base,
        tuner=args.tuner,
        max_trials=args.max_trials,
        directory=args.directory,
        project_name=args.project_name or base.arch,
        space_file=args.space,
        fixed=typed,
    )
    if best:
        print(f"best config: {best}")


def run_search(
    base, tuner="hyperband", max_trials=20, directory="runs/search", project_name="search", space_file=None, fixed=()
):
    """Run (or continue) the search; return the best config's path, or None on a distributed worker (the chief
    writes the results)."""
    from keras_cifar.errors import ConfigError
    from tuning.space import resolve_space

    if tuner not in TUNERS:
        raise ConfigError(f"unknown tuner '{tuner}'. Choose one of: {', '.join(TUNERS)}")
    if max_trials < 1:
        raise ConfigError(f"--max-trials must be at least 1, got {max_trials}")
    if not base.val_split:
        raise ConfigError("a search selects on validation accuracy: set val_split > 0")
    if tuner == "hyperband" and base.epochs != int(base.epochs):
        raise ConfigError(f"hyperband trains whole epochs: give a whole --epochs, not {base.epochs}")
    space = resolve_space(base, space_file, fixed)
    base = dataclasses.replace(base, **space.fixed)
    project_dir = Path(directory) / project_name
    role = distributed_role()
    # One search per project: a second one (or a second chief) is refused at once, naming the first one's pid.
    with contextlib.nullcontext() if role == "worker" else folder_lock(project_dir, "search"):
        return _search(base, space, tuner, max_trials, directory, project_name, project_dir, role)


def _search(base, space, tuner, max_trials, directory, project_name, project_dir, role):
    """The search itself, under the project's lock (not taken by a worker: its chief holds it)."""
    from keras_cifar.errors import TrainingError
    from tuning import results
    from tuning.hypermodel import CifarHyperModel

    if role != "worker":
        check_same_search(project_dir, base, space, tuner)
    if role == "chief":
        from tuning.launch import check_port_free

        check_port_free(os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"]))
    keras_tuner_search = make_tuner(
        tuner, CifarHyperModel(base, space), max_trials, base.epochs, base.seed, directory, project_name
    )
    callbacks = []
    if base.tensorboard:  # KerasTuner gives each trial its own folder and adds the HParams plugin's summary
        import keras

        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(project_dir / "tensorboard")))
    try:
        keras_tuner_search.search(callbacks=callbacks)
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        raise TrainingError(
            f"the search stopped: {str(exc).splitlines()[0]}; narrow the search space "
            f"(--space) or lower the learning-rate range, then re-run to continue"
        ) from None
    if role == "worker":
        return None
    return results.write_results(project_dir, base)


def make_tuner(name, hypermodel, max_trials, epochs, seed, directory, project_name):
    """Keras Tuner's own tuner, reloading the project if it exists (`overwrite=False` is what makes a search
    resumable). KerasTuner treats seed 0 as "pick one at random", hence the + 1."""
    import keras_tuner

    from tuning.hypermodel import OBJECTIVE

    common = dict(
        hypermodel=hypermodel,
        objective=OBJECTIVE,
        seed=seed + 1,
        directory=directory,
        project_name=project_name,
        overwrite=False,
    )
    if name == "random":
        return keras_tuner.RandomSearch(max_trials=max_trials, **common)
    if name == "bayesian":
        return keras_tuner.BayesianOptimization(max_trials=max_trials, **common)
    # Hyperband is budgeted in epochs: max_epochs is the longest a trial trains (--epochs), and each iteration
    # runs brackets of short trials, the best continued for longer. Every iteration has at least one trial, so
    # `max_trials` iterations never run out first; the oracle's trial cap stops the search at --max-trials.
    tuner = keras_tuner.Hyperband(max_epochs=epochs, factor=3, hyperband_iterations=max_trials, **common)
    tuner.oracle.max_trials = max_trials
    return tuner


def distributed_role() -> str:
    """ "chief", "worker" or "local", from KerasTuner's own environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def check_same_search(project_dir: Path, base, space, tuner: str) -> None:
    """A project continues only the search that started it: KerasTuner would otherwise mix the old space's
    trials with new settings without a word."""
    record = {
        "tuner": tuner,
        "space": space.entries,
        "base": settings(base.to_dict(), without=("io",)),
    }  # as a continued train run: paths may change
    record = json.loads(json.dumps(record))  # as it reads back: tuples become lists
    path = project_dir / "search.json"
    started = read_json(path)
    if started is not None:
        changed = [key for key in ("tuner", "space") if started.get(key) != record[key]]
        changed += [
            f"--{key.replace('_', '-')}"
            for key, value in record["base"].items()
            if started.get("base", {}).get(key) != value
        ]
        if changed:
            from keras_cifar.errors import ConfigError

            raise ConfigError(
                f"{project_dir} holds a search started with other settings ({', '.join(changed)}); "
                f"re-run it with the flags it started with, or choose a new --project-name"
            )
        return
    project_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def cli_main() -> None:
    sys.exit(cli.run(main))


if __name__ == "__main__":
    cli_main()
