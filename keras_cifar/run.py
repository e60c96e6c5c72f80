"""The run contract: what a run directory holds, read and written in one place.

A run directory holds `config.json` from its first second (the settings, the runtime chosen for this host,
the environment, the data's fingerprint), then `history.csv`, `model.keras`, `metrics.json` (written last:
a run with it is finished) and, from the benchmarks, `timing.json`. Every command opens runs through `RunDir`;
every write is atomic (a temporary file renamed over the old one), and one process at a time holds a run's lock.

A leaf module: the standard library and the package's errors only, so light commands can read runs.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import shutil
import time
from functools import lru_cache
from pathlib import Path

from keras_cifar.errors import CheckpointError, KerasCifarError

BACKUP_CURRENT = "current"  # RUN_DIR/backup/current -> epoch-N/, the crash backup (training/callbacks.py)


# /proc/cpuinfo keys that identify the CPU generation, and the names config.json gives them.
_CPU_NUMBERS = {"cpu family": "family", "model": "model_number", "stepping": "stepping"}


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model and the instruction-set flags that decide precision (Linux /proc/cpuinfo; empty elsewhere).

    The family and model numbers are kept too: a cloud VM's model name is often just "AMD EPYC", which does not
    tell a Zen 4 (family 25) from a Zen 5 (family 26), and the same recipe runs 1.5x faster on the second.
    """
    model, flags, numbers = platform.processor() or platform.machine(), set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in _CPU_NUMBERS:
                    numbers.setdefault(_CPU_NUMBERS[key], value.strip())
                elif key == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "fma")
    return {"model": model, **numbers, "cores": os.cpu_count(), "flags": sorted(f for f in wanted if f in flags)}


class MachineShare:
    """How much of the machine other processes used since the last call: a timing taken while something else
    ran on the cores is flagged, not compared (Linux /proc/stat; None elsewhere)."""

    def __init__(self):
        self._last = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        own = os.times()
        return busy / ticks, own.user + own.system, time.monotonic()

    def others(self) -> float | None:
        """The share of all cores' time that other processes used since the last call, 0 to 1."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2]:
            return None
        others = (now[0] - last[0]) - (now[1] - last[1])
        return min(1.0, max(0.0, others / ((now[2] - last[2]) * (os.cpu_count() or 1))))


def code_fingerprint() -> str:
    """A short hash of the package's source and recipes: config.json records it, so a run continued on other code
    says so."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class RunLockedError(KerasCifarError):
    """Another live process is writing the same folder."""


def write_atomic(path, data: str | bytes) -> None:
    """Write `data` to `path` so that a reader, or a kill at any moment, sees the old file or the new one whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_folder(new, target) -> None:
    """Put folder `new` where `target` is, so that a reader, or a kill at any moment, finds the old folder or the
    new one whole: one atomic exchange of the two names (Linux's renameat2), then the old one is deleted. Where
    that is not available, two renames, the old folder kept as `.NAME.previous` between them (`recover_folder`
    puts it back after a kill there)."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new)  # the old folder, under the new one's former name
    else:
        previous = target.with_name(f".{target.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
        os.replace(new, target)
        shutil.rmtree(previous)


def recover_folder(target) -> None:
    """After a kill between `replace_folder`'s two renames, the old folder goes back in place."""
    target = Path(target)
    previous = target.with_name(f".{target.name}.previous")
    if previous.is_dir() and not target.exists():
        os.replace(previous, target)


def _exchange(a: Path, b: Path) -> bool:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_json(path, payload, sort_keys=True) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path) -> dict | None:
    """A JSON object from `path`, None when the file is absent; a torn or foreign file is a clear error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); move it away or restore it from a copy") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


@contextlib.contextmanager
def folder_lock(folder, what: str):
    """Hold an exclusive lock on `folder` (its `.lock` file) for the block, or refuse at once if another process
    holds it. The kernel drops the lock when its process dies, so a killed run never leaves a stale lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")  # noqa: SIM115 (held until the block ends)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"{folder} is in use by {holder}; wait for it to end or choose another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({what})\n")
        handle.flush()
        yield
    finally:
        handle.close()


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What was resolved on this host for a run, each choice with its reason (config.json's "runtime")."""

    precision: str
    precision_reason: str
    jit_compile: bool
    jit_reason: str
    augment_in_model: bool
    distribution: dict = dataclasses.field(default_factory=dict)
    epochs: float | None = None  # planned epochs: --epochs (maybe fractional), or what --time-budget fitted
    seconds_per_step: float | None = None  # the timed step a --time-budget was fitted with
    seconds_per_epoch: float | None = None  # the epoch it planned: steps, validation and checkpoints

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """config.json, typed at its top level."""

    config: dict
    runtime: dict
    environment: dict
    data: dict
    model: dict
    recipe: str | None = None

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    @classmethod
    def from_dict(cls, payload: dict, where) -> RunRecord:
        try:
            return cls(
                **{f.name: payload.get(f.name, {} if f.name != "recipe" else None) for f in dataclasses.fields(cls)}
            )
        except TypeError as exc:
            raise CheckpointError(f"{where} is not a run's config.json ({exc})") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RunDir:
    """A run directory's files, typed; it need not exist yet."""

    CONFIG, METRICS, HISTORY, MODEL, TIMING, BACKUP = (
        "config.json",
        "metrics.json",
        "history.csv",
        "model.keras",
        "timing.json",
        "backup",
    )

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name) -> Path:
        return self.path / name

    @property
    def model_file(self) -> Path:
        return self.path / self.MODEL

    @property
    def history_file(self) -> Path:
        return self.path / self.HISTORY

    def is_finished(self) -> bool:
        return (self.path / self.METRICS).is_file()

    def lock(self, what: str):
        return folder_lock(self.path, what)

    def read_record(self) -> RunRecord | None:
        payload = read_json(self.path / self.CONFIG)
        if payload is None:
            return None
        if not isinstance(payload.get("config"), dict):
            raise CheckpointError(f'{self.path / self.CONFIG} is not a run\'s config.json (no "config" settings)')
        return RunRecord.from_dict(payload, self.path / self.CONFIG)

    def require_record(self) -> RunRecord:
        record = self.read_record()
        if record is None:
            raise CheckpointError(f"{self.path} is not a run directory (no {self.CONFIG})")
        return record

    def write_record(self, record: RunRecord) -> None:
        write_json(self.path / self.CONFIG, record.to_dict())

    def read_metrics(self) -> dict | None:
        return read_json(self.path / self.METRICS)

    def read_timing(self) -> dict | None:
        return read_json(self.path / self.TIMING)

    def write_timing(self, timing: dict) -> None:
        write_json(self.path / self.TIMING, timing)

    def read_history(self) -> dict[str, list[float]]:
        return read_history(self.history_file)

    def completed_epochs(self) -> int:
        """Epochs the crash backup holds (0 when none): where a continued run starts."""
        state = read_json(self.path / self.BACKUP / BACKUP_CURRENT / "training_metadata.json") or {}
        epoch = state.get("epoch", 0)
        return epoch if isinstance(epoch, int) and epoch >= 0 else 0

    def trim_history(self, epochs: int) -> float | None:
        """Keep the history rows of the epochs the backup holds (a kill between logging and backing up leaves one
        more), rewritten atomically; return the best validation accuracy so far, so the best-model checkpoint
        is not overwritten by a worse one."""
        path = self.history_file
        if not path.is_file():
            return None
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if (r.get("epoch") or "").isdigit() and int(r["epoch"]) < epochs]
            fields = reader.fieldnames
        if not fields:  # killed before the first row: let CSVLogger start the file afresh
            path.unlink()
            return None
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(path, out.getvalue())
        scores = [float(r["val_accuracy"]) for r in rows if r.get("val_accuracy") not in (None, "", "NA")]
        return max(scores) if scores else None


def read_history(history_csv) -> dict[str, list[float]]:
    """A Keras CSVLogger file as {column: [float, ...]}; a blank or "NA" cell (not logged that epoch) is NaN.

    CSVLogger pads the val_ columns of a run without validation data with "NA".
    """
    history_csv = Path(history_csv)
    if not history_csv.is_file():
        raise KerasCifarError(f"Training log {history_csv} does not exist; train a model first.")
    with history_csv.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise KerasCifarError(f"Training log {history_csv} has no epochs in it; was training interrupted?")
    try:
        return {
            column: [math.nan if row[column] in ("", "NA") else float(row[column]) for row in rows]
            for column in rows[0]
        }
    except (TypeError, ValueError) as error:
        raise KerasCifarError(f"Training log {history_csv} is not a Keras CSVLogger file: {error}") from error


def find_runs(paths) -> list[RunDir]:
    """Finished runs among `paths`; a folder holding run directories (a suite's, one or two levels down) is expanded."""
    found = []
    for path in map(Path, paths):
        if RunDir(path).is_finished():
            found.append(RunDir(path))
            continue
        for pattern in ("*/" + RunDir.METRICS, "*/*/" + RunDir.METRICS):
            hits = sorted(p.parent for p in path.glob(pattern)) if path.is_dir() else []
            if hits:
                found += [RunDir(p) for p in hits]
                break
        else:
            raise CheckpointError(f"{path}: not a finished run directory (no {RunDir.METRICS}) nor a folder of them")
    return found
