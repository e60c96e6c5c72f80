"""One dataclass holds every setting of a run.

Settings are resolved in layers, later ones winning: the dataclass defaults, the architecture's default
recipe (`recipes/<arch>.yaml`), a named `--recipe`, a `--config FILE`, then the command-line flags the user
actually typed. The resolved object is saved as `config.json` in the run directory, and that file is itself a
valid `--config`, so any run can be repeated or continued from its directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import typing
from pathlib import Path

from keras_cifar import cli
from keras_cifar.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"

SOURCES = ("auto", "local", "tfds")
TTA_MODES = ("none", "flip", "flip_translate")
OPTIMIZERS = ("sgd", "muon", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "plateau", "constant")
PRECISIONS = ("auto", "float32", "mixed", "mixed_bfloat16", "mixed_float16")
AUTO_ON_OFF = ("auto", "on", "off")
STRATEGIES = ("none", "mirrored", "multiworker")


# What a setting is to a run, the one place that says which settings count where:
# - experiment: how the model is trained; searched by tuning.
# - scope: what is trained and scored, and for how long (the net, the data, the budget); fixed during a search.
# - runtime: how this host runs it (precision, XLA, replicas); counts in comparisons, never searched.
# - seed: one replicate of an experiment; comparisons pool the seeds of one experiment.
# - io: where the run reads and writes and how loudly; may change when a run is continued.
ROLES = ("experiment", "scope", "runtime", "seed", "io")


def _field(default, help, choices=None, role="experiment", flag=True):
    """A dataclass field that also carries its command-line help, allowed values and role."""
    assert role in ROLES, role
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "role": role, "flag": flag})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # Model
    arch: str = _field("resnet18", "architecture name (see --list-archs)", role="scope")
    width_multiplier: float = _field(1.0, "scale every layer's channel count (1.0 = standard widths)")
    dropout: float = _field(0.0, "dropout rate before the classifier")
    activation: str | None = _field(
        None, "the activation, for nets that offer a choice (airbench: gelu, its own, or silu); default: the net's own"
    )
    bn_momentum: float = _field(
        0.9, "batch-norm moving-average momentum (Keras default 0.99 is too slow for short runs)"
    )
    # Data
    data_dir: str | None = _field(
        None,
        "local CIFAR-10 copy (binary or python layout, folder or .tar.gz); "
        "default $KERAS_CIFAR_DATA, else tensorflow-datasets",
        role="io",
    )
    source: str = _field("auto", "where the data comes from", SOURCES, role="io")
    val_split: int = _field(
        5000,
        "images held out of the training set for validation (0 = none: fixed schedule, no model selection)",
        role="scope",
    )
    train_limit: int | None = _field(None, "use only the first N training images (quick runs)", role="scope")
    val_limit: int | None = _field(None, "use only the first N validation images", role="scope")
    test_limit: int | None = _field(None, "use only the first N test images", role="scope")
    # Augmentation
    crop_padding: int = _field(4, "pad-and-random-crop padding in pixels (0 = off)")
    flip: bool = _field(True, "random horizontal flip")
    alternating_flip: bool = _field(
        False,
        "with --flip: mirror a fixed random half of the images, and all of them every other epoch (airbench), "
        "instead of at random",
    )
    rotation: float = _field(0.0, "random rotation, maximum degrees (0 = off)")
    translation: float = _field(0.0, "random translation, fraction of the image size (0 = off)")
    erasing: float = _field(0.0, "random erasing (cutout) probability per image (0 = off)")
    brightness: float = _field(
        0.0, "random brightness: shift each image by up to this fraction of the pixel range (0 = off)"
    )
    contrast: float = _field(0.0, "random contrast: scale each image's contrast by 1 ± up to this (0 = off)")
    randaugment: int = _field(
        0, "RandAugment (Keras's layer): random operations per batch, each at a random strength per image (0 = off)"
    )
    randaugment_magnitude: float = _field(0.5, "RandAugment: how strong its operations can be, 0 to 1")
    mixup: float = _field(
        0.0, "MixUp: blend image pairs and their labels, weights from Beta(alpha, alpha); the alpha, 0 to 1 (0 = off)"
    )
    cutmix: float = _field(
        0.0, "CutMix: paste a box of another image and mix the labels by its area; the box's factor, 0 to 1 (0 = off)"
    )
    augment_in_model: str = _field(
        "auto",
        "run augmentation inside the model instead of tf.data (auto = only where tf.data cannot: non-TensorFlow backends)",
        AUTO_ON_OFF,
        role="runtime",
    )
    # Optimisation
    epochs: float = _field(
        200,
        "epochs to train, the most with early stopping; a fraction trains part of the last one (airbench trains 9.9)",
        role="scope",
    )
    time_budget: float | None = _field(
        None,
        "wall-clock minutes: time a few steps, then train the epochs that fit, in tenths (replaces --epochs)",
        role="scope",
    )
    batch_size: int = _field(128, "images per step: the global batch, split evenly over the replicas of --strategy")
    drop_remainder: bool = _field(
        False,
        "skip each epoch's last, partial training batch (airbench does; the set is reshuffled every epoch, so no image is left out for good)",
    )
    optimizer: str = _field(
        "sgd",
        "SGD with Nesterov momentum; muon = Muon for conv filters and that SGD for the rest; or AdamW",
        OPTIMIZERS,
    )
    lr: float = _field(0.1, "peak learning rate (with muon: of the variables SGD trains)")
    momentum: float = _field(0.9, "SGD momentum")
    muon_lr: float = _field(
        0.24, "muon: peak step of the conv filters, relative to their fixed norm (the same schedule as --lr)"
    )
    muon_momentum: float = _field(0.6, "muon: Nesterov momentum of the conv filters")
    weight_decay: float = _field(
        5e-4, "weight decay of conv/dense kernels, in PyTorch's units (SGD: coupled L2; AdamW: decoupled)"
    )
    label_smoothing: float = _field(0.1, "label smoothing of the cross-entropy targets")
    schedule: str = _field("cosine", "learning-rate schedule", SCHEDULES)
    warmup_epochs: float = _field(1.0, "linear warm-up length (onecycle, cosine; at most half the run)")
    warmup_start_factor: float = _field(0.0, "LR at the start of warm-up, as a fraction of --lr")
    final_lr_factor: float = _field(0.0, "LR at the end of onecycle/cosine decay, as a fraction of --lr")
    bias_lr_scale: float = _field(1.0, "SGD and muon: LR multiplier for batch-norm shifts (airbench uses 64)")
    whiten_bias_epochs: int | None = _field(
        None,
        "patch-whitening nets (airbench): freeze the whitening bias after N epochs, which also skips a backward conv "
        "(default: train it throughout)",
    )
    lookahead: bool = _field(
        False, "airbench's Lookahead: every 5 steps, set the weights to an EMA whose decay grows over training"
    )
    step_milestones: tuple[float, ...] = _field((0.5, 0.75), "step schedule: fractions of training where the LR drops")
    step_gamma: float = _field(0.1, "step schedule: LR factor at each milestone")
    early_stopping_patience: int = _field(
        0, "stop after N epochs without val_accuracy improvement, restoring the best weights (0 = off)"
    )
    precision: str = _field(
        "auto",
        "numeric precision; auto picks the fastest for this host, mixed the host's mixed policy",
        PRECISIONS,
        role="runtime",
    )
    jit_compile: str = _field("auto", "XLA compilation; auto picks by host", AUTO_ON_OFF, role="runtime")
    seed: int = _field(0, "seed for the split, shuffling, augmentation and initialisation", role="seed")
    strategy: str = _field(
        "none",
        "data-parallel training: mirrored = every local GPU (or the CPU), multiworker = "
        "several machines from TF_CONFIG (TensorFlow) or keras.distribution (JAX)",
        STRATEGIES,
        role="runtime",
    )
    # Outputs
    run_dir: str | None = _field(None, "where every output goes (default runs/<arch>-<time>)", role="io")
    tensorboard: bool = _field(True, "write TensorBoard logs to RUN_DIR/tensorboard", role="io")
    tta: str = _field("none", "test-time augmentation in the final evaluation", TTA_MODES, role="scope")
    recipe: str | None = _field(
        None,
        "the named recipe these settings started from (recorded; its settings are already in the others)",
        role="io",
        flag=False,
    )
    verbose: int | None = _field(
        None,
        "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch "
        "(default: a progress bar on a terminal, one line per epoch in a log file)",
        (0, 1, 2),
        role="io",
    )

    def __post_init__(self):
        # A whole number of epochs stays an int (config.json says 8, not 8.0); only a fraction is a float.
        if isinstance(self.epochs, float) and self.epochs.is_integer():
            object.__setattr__(self, "epochs", int(self.epochs))

    def validate(self) -> TrainConfig:
        """Reject settings that would fail late or silently do something else."""
        positive = {
            "width_multiplier": self.width_multiplier,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "muon_lr": self.muon_lr,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        in_unit = {
            "dropout": self.dropout,
            "erasing": self.erasing,
            "label_smoothing": self.label_smoothing,
            "momentum": self.momentum,
            "muon_momentum": self.muon_momentum,
            "bn_momentum": self.bn_momentum,
            "translation": self.translation,
        }
        for name, value in in_unit.items():
            if not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        closed_unit = {
            "brightness": self.brightness,
            "contrast": self.contrast,
            "randaugment_magnitude": self.randaugment_magnitude,
            "mixup": self.mixup,
            "cutmix": self.cutmix,
        }
        for name, value in closed_unit.items():
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
        non_negative = {
            "weight_decay": self.weight_decay,
            "warmup_start_factor": self.warmup_start_factor,
            "final_lr_factor": self.final_lr_factor,
            "bias_lr_scale": self.bias_lr_scale,
            "crop_padding": self.crop_padding,
            "rotation": self.rotation,
            "randaugment": self.randaugment,
            "val_split": self.val_split,
            "warmup_epochs": self.warmup_epochs,
            "early_stopping_patience": self.early_stopping_patience,
            "whiten_bias_epochs": self.whiten_bias_epochs or 0,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ConfigError(f"time_budget must be a positive number of minutes, got {self.time_budget!r}")
        for name in ("train_limit", "val_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive number of images, got {value!r}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                raise ConfigError(f"{f.name} must be one of {', '.join(map(str, choices))}; got {value!r}")
        if self.bias_lr_scale != 1.0 and self.optimizer == "adamw":
            raise ConfigError("bias_lr_scale only applies to SGD and muon (Adam-type updates ignore gradient scale)")
        if self.optimizer == "muon" and not self.momentum:
            raise ConfigError("muon trains the non-filter variables with momentum SGD: momentum must be > 0")
        if self.early_stopping_patience and not self.val_split:
            raise ConfigError("early_stopping_patience needs validation data: set val_split > 0")
        if self.schedule == "plateau" and not self.val_split:
            raise ConfigError("the plateau schedule watches validation loss: set val_split > 0")
        if self.strategy == "multiworker" and not self.run_dir:
            raise ConfigError(
                "--strategy multiworker needs --run-dir: every worker must name the same run "
                "(the chief writes it; a default name would differ by the workers' clocks)"
            )
        if self.strategy == "multiworker" and self.time_budget:
            raise ConfigError(
                "--time-budget cannot be used with --strategy multiworker: each worker would time "
                "its own steps and could plan a different number of epochs; give --epochs"
            )
        if any(not 0 < m < 1 for m in self.step_milestones):
            raise ConfigError(f"step_milestones are fractions of training in (0, 1), got {list(self.step_milestones)}")
        return self

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def role_of(name: str) -> str:
    """A setting's role; a key this version does not know (from an older run's config.json) counts as experiment."""
    return FIELDS[name].metadata["role"] if name in FIELDS else "experiment"


def settings(mapping: dict, without=()) -> dict:
    """The settings of a config mapping whose role is not in `without`: `without=("io",)` is what must match for a
    run to be continued, `without=("seed", "io")` what makes two runs seeds of one experiment."""
    return {k: v for k, v in mapping.items() if role_of(k) not in without}


SEARCHABLE = tuple(name for name in FIELDS if role_of(name) == "experiment")


def _coerce(name: str, value, where: str):
    """Convert a value read from YAML/JSON to the field's type, or say which key is wrong."""
    hint = _HINTS[name]
    optional = type(None) in typing.get_args(hint)  # Optional[X] and X | None alike
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: '{name}' cannot be null")
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    try:
        if typing.get_origin(base) is tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(float(v) for v in value)
        if base is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{name}' should be {getattr(base, '__name__', base)}, got {value!r}") from None


# Names people carry over from other tools, mapped to ours for the "did you mean" hint.
_FAMILIAR_NAMES = {
    "learning_rate": "lr",
    "architecture": "arch",
    "model": "arch",
    "mixed_precision": "precision",
    "patience": "early_stopping_patience",
    "wd": "weight_decay",
    "width": "width_multiplier",
}


def overrides_from_mapping(mapping: dict, where: str) -> dict:
    """Check keys and types of a config mapping; unknown keys are an error that suggests the closest one."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(mapping).__name__}")
    result = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            close = [_FAMILIAR_NAMES[name]] if name in _FAMILIAR_NAMES else difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown setting '{key}'.{hint}")
        result[name] = _coerce(name, value, where)
    return result


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON config file (run directories' config.json included) into checked overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    data = data or {}
    # A run directory's config.json keeps the settings under "config" beside environment facts.
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    return overrides_from_mapping(data, str(path))


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe '{name}'. Choose one of: {', '.join(available_recipes())}")
    return path


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, generated from the dataclass so the CLI can never drift from the config."""
    for name, f in FIELDS.items():
        if not f.metadata["flag"]:
            continue
        flag = "--" + name.replace("_", "-")
        hint = _HINTS[name]
        kwargs = {"dest": name, "default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (default {f.default})"}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if typing.get_origin(base) is tuple:
            kwargs.update(nargs="+", type=float)
        else:
            kwargs["type"] = base
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--recipe", default=None, help="named settings from keras_cifar/recipes/ (e.g. fast)")
    parser.add_argument("--config", default=None, help="YAML or JSON file of settings; flags override it")
    parser.add_argument(
        "--mixed-precision",
        dest="precision",
        action="store_const",
        const="mixed",
        default=argparse.SUPPRESS,
        help="shorthand: the host's mixed precision (bfloat16 on CPU, float16 on GPU)",
    )


def train_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The parser of `train` (every setting a flag, --recipe, --config, --list-archs); suite and the benchmarks
    parse their training flags with it too."""
    parser = cli.parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--list-archs", action="store_true", help="print the architecture names and exit")
    return parser


def parse_train_args(argv) -> argparse.Namespace:
    return train_parser(
        "python -m keras_cifar.train",
        "`python -m keras_cifar.train --arch inception`: train one model into a run directory.",
    ).parse_args(argv)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Layer defaults < architecture recipe < --recipe < --config < typed flags."""
    cli = {k: v for k, v in vars(args).items() if k in FIELDS and k != "recipe"}  # --recipe names a layer below
    if "step_milestones" in cli:
        cli["step_milestones"] = tuple(cli["step_milestones"])
    named = read_config_file(recipe_path(args.recipe)) if getattr(args, "recipe", None) else {}
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    arch = cli.get("arch") or from_file.get("arch") or named.get("arch") or TrainConfig.arch
    from keras_cifar.models import canonical_name

    arch_recipe = RECIPES_DIR / f"{canonical_name(arch)}.yaml"
    layers = [read_config_file(arch_recipe) if arch_recipe.is_file() else {}, named, from_file, cli]
    merged = {}
    for layer in layers:
        merged.update(layer)
    merged["arch"] = arch
    if getattr(args, "recipe", None):
        merged["recipe"] = args.recipe
    if "epochs" in cli and "time_budget" not in cli:
        merged["time_budget"] = None  # a typed --epochs beats a budget from a recipe or file (--recipe long)
    return TrainConfig(**merged).validate()
