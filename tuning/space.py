"""What a search may change, per architecture family, as plain data.

Every entry is named after the `TrainConfig` setting it sets, so a trial's values are config overrides as they
stand and the best trial is a `--config` file as it stands. An entry is one of:

    {min: A, max: B}              a range; int or float from the setting's type; optional `sampling: log`, `step`
    {values: [a, b, c]}           a choice
    {sgd: ENTRY, adamw: ENTRY}    a different range per optimizer (SGD and AdamW want LRs 100x apart)

A `--space FILE` (YAML) changes the family's entries key by key: a mapping merges into the entry (`lr: {max: 0.2}`),
a plain value fixes the setting for the whole search (`optimizer: sgd`), `null` leaves it out of the search (the
base config's value is used), and a new key searches any other setting (`momentum: {min: 0.8, max: 0.95}`).
Every bound and choice is checked against `TrainConfig.validate()` before anything trains.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

from keras_cifar.config import FIELDS, OPTIMIZERS, SEARCHABLE, TrainConfig, overrides_from_mapping
from keras_cifar.errors import ConfigError
from keras_cifar.models.registry import family

# Residual and plain conv nets trained with the recipes' 128-image batches.
STANDARD = {
    "lr": {"sgd": {"min": 0.02, "max": 0.4, "sampling": "log"}, "adamw": {"min": 3e-4, "max": 3e-3, "sampling": "log"}},
    "weight_decay": {
        "sgd": {"min": 5e-5, "max": 2e-3, "sampling": "log"},
        "adamw": {"min": 1e-3, "max": 0.1, "sampling": "log"},
    },
    "optimizer": {"values": ["sgd", "adamw"]},
    "batch_size": {"values": [64, 128, 256]},
    "label_smoothing": {"min": 0.0, "max": 0.2, "step": 0.05},
    "schedule": {"values": ["cosine", "onecycle", "step"]},
    "crop_padding": {"values": [0, 2, 4]},
    "rotation": {"min": 0.0, "max": 15.0},
    "erasing": {"values": [0.0, 0.5]},  # random erasing off, or on for half the images
    "width_multiplier": {"values": [0.5, 1.0]},
    "dropout": {"min": 0.0, "max": 0.5, "step": 0.1},
}

SPACES = {
    "resnet": STANDARD,
    "inception": STANDARD,
    # No residual paths: a lower LR ceiling (the vgg16 recipe uses half the ResNet LR).
    "vgg": {
        **STANDARD,
        "lr": {
            "sgd": {"min": 0.01, "max": 0.2, "sampling": "log"},
            "adamw": {"min": 1e-4, "max": 2e-3, "sampling": "log"},
        },
    },
    # The fast nets train in large batches at a high SGD LR (fast-sgd: batch 1,024, lr 1.5), or with Muon for the
    # filters (fast: batch 2,000, muon_lr 0.24, SGD lr 1.65 for the rest).
    "fast": {
        **STANDARD,
        "lr": {"min": 0.2, "max": 3.0, "sampling": "log"},
        "weight_decay": {"min": 2e-4, "max": 5e-3, "sampling": "log"},
        "optimizer": {"values": ["sgd", "muon"]},
        "muon_lr": {"muon": {"min": 0.08, "max": 0.7, "sampling": "log"}},
        "batch_size": {"values": [512, 1024, 2000]},
        "label_smoothing": {"min": 0.0, "max": 0.3, "step": 0.05},
        "schedule": {"values": ["onecycle", "cosine"]},
        "dropout": {"min": 0.0, "max": 0.3, "step": 0.1},
    },
}

RANGE_KEYS = ("min", "max", "sampling", "step")
_TYPES = typing.get_type_hints(TrainConfig)


@dataclasses.dataclass
class Space:
    """The searched entries, and the settings a space file fixed for the whole search."""

    entries: dict
    fixed: dict = dataclasses.field(default_factory=dict)


def family_space(arch: str) -> dict:
    """The space of the architecture's family (its registry entry); a family with no space of its own gets the
    standard one, so adding an architecture stays one file and one registry line."""
    return copy.deepcopy(SPACES.get(family(arch), STANDARD))


def resolve_space(base: TrainConfig, space_file=None, fixed_names=()) -> Space:
    """The family's space for `base.arch`, changed by `space_file`, without the settings in `fixed_names` (those
    typed on the command line), every bound checked against `base`."""
    entries = family_space(base.arch)
    fixed = {}
    where = str(space_file) if space_file else "search space"
    for key, change in (_read_space_file(space_file) if space_file else {}).items():
        if change is None:
            entries.pop(key, None)
        elif isinstance(change, dict):
            entries[key] = _merged(entries[key], change) if key in entries else change
        else:
            fixed.update(overrides_from_mapping({key: change}, where))
            entries.pop(key, None)
    for name in fixed_names:
        entries.pop(name, None)
    config = dataclasses.replace(base, **fixed)
    config.validate()
    entries = _for_optimizers(entries, config.optimizer)
    return Space({key: _check_entry(key, entry, config, where) for key, entry in entries.items()}, fixed)


def declare(space: Space, hp) -> dict:
    """Declare the space on KerasTuner's `hp` (the optimizer first: other entries may depend on it) and return
    this trial's values as `TrainConfig` overrides.

    A per-optimizer entry becomes one hyper-parameter per optimizer, `lr.sgd` and `lr.adamw`, each active only
    with its optimizer (KerasTuner loses the value of one name declared under two conditions)."""
    for key in sorted(space.entries, key=lambda k: k != "optimizer"):
        entry = space.entries[key]
        if not _per_optimizer(entry):
            _declare_one(hp, key, key, entry)
            continue
        for optimizer, sub_entry in entry.items():
            with hp.conditional_scope("optimizer", [optimizer]):
                _declare_one(hp, f"{key}.{optimizer}", key, sub_entry)
    return overrides_from_mapping(trial_values(hp), "trial")


def trial_values(hyperparameters) -> dict:
    """The config settings of a trial's (or a reloaded trial's) hyper-parameters: active ones only, per-optimizer
    names folded back into their setting, without KerasTuner's own `tuner/...` bookkeeping."""
    values = {}
    for p in hyperparameters.space:
        setting = p.name.split(".")[0]
        if setting in FIELDS and hyperparameters.is_active(p) and p.name in hyperparameters.values:
            value = hyperparameters.values[p.name]
            # A stepped float range yields 0.15000000000000002; six digits are what trains and what is written.
            values[setting] = float(f"{value:.6g}") if isinstance(value, float) else value
    return values


def _read_space_file(path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting names to ranges, got {type(data).__name__}")
    for key in data:
        if key not in FIELDS:  # the config's own "unknown setting ... Did you mean" error
            overrides_from_mapping({key: None}, str(path))
        if key not in SEARCHABLE:  # what a run trains on, where it writes, how this host runs it
            raise ConfigError(
                f"{path}: '{key}' is not searched; set it on the command line (--{key.replace('_', '-')})"
            )
    return data


def _per_optimizer(entry) -> bool:
    return isinstance(entry, dict) and bool(entry) and set(entry) <= set(OPTIMIZERS)


def _for_optimizers(entries: dict, base_optimizer: str) -> dict:
    """Per-optimizer entries keep only the optimizers this search can pick; with one, they become plain entries."""
    choice = entries.get("optimizer")
    optimizers = (
        choice["values"] if isinstance(choice, dict) and isinstance(choice.get("values"), list) else [base_optimizer]
    )
    result = {}
    for key, entry in entries.items():
        if _per_optimizer(entry):
            entry = {opt: sub for opt, sub in entry.items() if opt in optimizers}
            if len(optimizers) == 1:
                entry = entry.get(optimizers[0])
        if entry:
            result[key] = entry
    return result


def _merged(entry, change):
    """A file's change to an entry: fields merge, but a change of kind (range, choice, per optimizer) replaces."""
    if _per_optimizer(entry) and _per_optimizer(change):
        return {**entry, **{opt: _merged(entry.get(opt, {}), sub) for opt, sub in change.items()}}
    same_kind = ("values" in entry) == ("values" in change or not set(change) & set(RANGE_KEYS))
    if _per_optimizer(entry) or _per_optimizer(change) or "values" in change or not same_kind:
        return change
    return {**entry, **change}


def _check_entry(key: str, entry, config: TrainConfig, where: str):
    """The entry, its numbers coerced to the setting's type; a bad bound raises an error naming the key."""
    if _per_optimizer(entry):
        return {
            opt: _check_entry(key, sub, dataclasses.replace(config, optimizer=opt), where) for opt, sub in entry.items()
        }
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: '{key}' should be a range {{min, max}} or a choice {{values: [...]}}, got {entry!r}"
        )
    unknown = set(entry) - {*RANGE_KEYS, "values"}
    if unknown:
        raise ConfigError(
            f"{where}: '{key}' has unknown field(s) {sorted(unknown)}; use min/max "
            f"(with sampling: log|linear, step) or values"
        )
    if "values" in entry:
        if set(entry) != {"values"} or not isinstance(entry["values"], list) or not entry["values"]:
            raise ConfigError(f"{where}: '{key}': values must be a non-empty list, on its own")
        candidates = [overrides_from_mapping({key: v}, where)[key] for v in entry["values"]]
        checked = {"values": candidates}
    else:
        checked = _check_range(key, entry, where)
        candidates = [checked["min"], checked["max"]]
    for value in candidates:
        try:
            dataclasses.replace(config, **{key: value}).validate()
        except ConfigError as exc:
            raise ConfigError(f"{where}: '{key}' = {value!r} is not a valid setting: {exc}") from None
    return checked


def _check_range(key: str, entry: dict, where: str) -> dict:
    if _TYPES[key] not in (int, float):
        raise ConfigError(f"{where}: '{key}' is not a number; give a choice {{values: [...]}}")
    if "min" not in entry or "max" not in entry:
        raise ConfigError(f"{where}: '{key}' needs both min and max")
    low, high = (overrides_from_mapping({key: entry[b]}, where)[key] for b in ("min", "max"))
    if low > high:
        raise ConfigError(f"{where}: '{key}' has min {low} greater than max {high}")
    sampling = entry.get("sampling", "linear")
    if sampling not in ("linear", "log"):
        raise ConfigError(f"{where}: '{key}' sampling must be linear or log, got {sampling!r}")
    if sampling == "log" and not low > 0:
        raise ConfigError(f"{where}: '{key}' uses log sampling, so min must be positive, got {low}")
    checked = {"min": low, "max": high, "sampling": sampling}
    if entry.get("step") is not None:
        step = overrides_from_mapping({key: entry["step"]}, where)[key]
        if not step > 0:
            raise ConfigError(f"{where}: '{key}' step must be positive, got {step}")
        checked["step"] = step
    return checked


def _declare_one(hp, name: str, key: str, entry: dict):
    if "values" in entry:
        return hp.Choice(name, entry["values"])
    kind = hp.Int if _TYPES[key] is int else hp.Float
    return kind(name, entry["min"], entry["max"], step=entry.get("step"), sampling=entry["sampling"])
