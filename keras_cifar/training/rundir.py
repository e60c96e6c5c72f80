"""The run directory: the unit every command reads and writes.

A run directory holds `config.json` from its first second, so a killed run is recognised and continued by
re-running the same command, and a finished one is never overwritten by accident.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from keras_cifar.errors import ConfigError

RUNS_ROOT = Path("runs")
# Settings that may change between a run and its continuation without changing what is trained.
_RESUMABLE_CHANGES = ("run_dir", "verbose", "data_dir", "tensorboard")
# The crash backup lives in RUN_DIR/backup/epoch-N/, published through this symlink (see callbacks.py).
BACKUP_CURRENT = "current"


def _comparable(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in _RESUMABLE_CHANGES}


def read_run_config(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); move the run directory away or pick another --run-dir") from None


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "metrics.json").is_file()


def _find_unfinished(config_dict: dict) -> Path | None:
    """The newest unfinished run under runs/ with the same settings: what a re-run of one command continues."""
    if not RUNS_ROOT.is_dir():
        return None
    for candidate in sorted(RUNS_ROOT.iterdir(), reverse=True):
        saved = read_run_config(candidate) if candidate.is_dir() else None
        if saved and not is_finished(candidate) and _comparable(saved["config"]) == _comparable(config_dict):
            return candidate
    return None


def prepare_run_dir(config) -> tuple[Path, bool]:
    """Pick the run directory and say whether it continues an earlier, killed run."""
    wanted = config.to_dict()
    if config.run_dir is None:
        found = _find_unfinished(wanted)
        if found is not None:
            config.run_dir = str(found)
            return found, True
        config.run_dir = str(RUNS_ROOT / f"{config.arch}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = Path(config.run_dir)
    saved = read_run_config(run_dir)
    if saved is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, False
    if is_finished(run_dir):
        raise ConfigError(f"{run_dir} holds a finished run; evaluate it with `python -m keras_cifar.evaluate {run_dir}` "
                          "or choose a new --run-dir")
    before, now = _comparable(saved["config"]), _comparable(wanted)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"{run_dir} holds an unfinished run with other settings ({details}); re-run it with its "
                          f"own settings (--config {run_dir / 'config.json'}) or choose a new --run-dir")
    return run_dir, True


def write_json(path: Path, payload: dict) -> None:
    """Write through a temporary file so a kill never leaves half a JSON file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def completed_epochs(run_dir: Path) -> int:
    """Epochs the last backup holds (0 when none): where a continued run starts."""
    path = Path(run_dir) / "backup" / BACKUP_CURRENT / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def trim_history(run_dir: Path, epochs: int) -> float | None:
    """Drop history rows of epochs the backup does not hold (a kill between logging and backing up), and
    return the best validation accuracy so far so the best-model checkpoint is not overwritten by a worse one."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("epoch", "").isdigit() and int(r["epoch"]) < epochs]
        fields = reader.fieldnames
    if not fields:  # killed before the first row: let CSVLogger start the file afresh
        path.unlink()
        return None
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    scores = [float(r["val_accuracy"]) for r in rows if r.get("val_accuracy")]
    return max(scores) if scores else None
