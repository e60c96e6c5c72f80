"""Which run directory a `train` command writes: a new one, or the killed run it continues.

A run directory holds `config.json` from its first second, so a killed run is recognised and continued by
re-running the same command, and a finished one is never overwritten by accident.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from keras_cifar.config import settings
from keras_cifar.errors import ConfigError
from keras_cifar.run import RunDir

RUNS_ROOT = Path("runs")


def _changes(saved: dict, wanted: dict) -> list[str]:
    """The settings that differ between a saved run and the wanted one, but for where it reads and writes."""
    before, now = settings(saved, without=("io",)), settings(wanted, without=("io",))
    return [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]


def _find_unfinished(config_dict: dict) -> RunDir | None:
    """The newest unfinished run under runs/ with the same settings: what a re-run of one command continues."""
    if not RUNS_ROOT.is_dir():
        return None
    for candidate in sorted(RUNS_ROOT.iterdir(), reverse=True):
        run = RunDir(candidate)
        try:
            record = run.read_record() if candidate.is_dir() else None
        except ConfigError:
            continue
        if record and not run.is_finished() and not _changes(record.config, config_dict):
            return run
    return None


def prepare_run_dir(config, data_fingerprint: str) -> tuple:
    """The config with its run directory set, that directory, and whether it continues an earlier, killed run.

    Refused: a finished run; an unfinished run with other settings or other data; a folder that is not a run
    and not empty (it is never taken over, nor anything in it deleted)."""
    wanted = config.to_dict()
    if config.run_dir is None:
        found = _find_unfinished(wanted)
        path = found.path if found else RUNS_ROOT / f"{config.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        config = dataclasses.replace(config, run_dir=str(path))
    run = RunDir(config.run_dir)
    record = run.read_record()
    if record is None:
        if run.path.exists() and (not run.path.is_dir() or any(p.name != ".lock" for p in run.path.iterdir())):
            raise ConfigError(
                f"{run.path} exists and is not a run directory (no config.json); choose a new --run-dir "
                "or an empty folder"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        return config, run, False
    if run.is_finished():
        raise ConfigError(
            f"{run.path} holds a finished run; evaluate it with `python -m keras_cifar.evaluate "
            f"{run.path}` or choose a new --run-dir"
        )
    changed = _changes(record.config, wanted)
    if changed:
        details = ", ".join(changed)
        raise ConfigError(
            f"{run.path} holds an unfinished run with other settings ({details}); re-run it with its "
            f"own settings (--config {run / RunDir.CONFIG}) or choose a new --run-dir"
        )
    if record.fingerprint and record.fingerprint != data_fingerprint:
        raise ConfigError(
            f"{run.path} was started on other data (fingerprint {record.fingerprint}, now "
            f"{data_fingerprint}); continue it with the same data or choose a new --run-dir"
        )
    return config, run, True
