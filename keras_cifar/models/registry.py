"""Architectures by name. Adding one takes a new module with a builder and one line in `MODELS`.

Builders are named, not imported: their modules load Keras, and naming, listing and checking architectures
(config resolution, `--list-archs`, the suite's plan) must not."""

import dataclasses
import importlib
import inspect

from keras_cifar.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Architecture:
    builder: str  # "module:function" under keras_cifar.models, imported when a model is built
    family: str  # vgg, resnet, inception, fast: picks the tuning space
    group: str  # classic (the nets the project is for) or fast (the short-budget CPU nets)

    def load(self):
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"keras_cifar.models.{module}"), function)


MODELS = {
    "vgg16": Architecture("vgg:vgg16", "vgg", "classic"),
    "vgg19": Architecture("vgg:vgg19", "vgg", "classic"),
    "resnet18": Architecture("resnet:resnet18", "resnet", "classic"),
    "resnet34": Architecture("resnet:resnet34", "resnet", "classic"),
    "resnet50": Architecture("resnet:resnet50", "resnet", "classic"),
    "resnet101": Architecture("resnet:resnet101", "resnet", "classic"),
    "inception": Architecture("inception:inception", "inception", "classic"),
    "resnet9": Architecture("resnet9:resnet9", "fast", "fast"),
    "airbench": Architecture("airbench:airbench", "fast", "fast"),
}

ALIASES = {"googlenet": "inception"}

# Names for sets of architectures (`python -m keras_cifar.suite --archs classic`).
GROUPS = {
    group: tuple(name for name, a in MODELS.items() if a.group == group)
    for group in dict.fromkeys(a.group for a in MODELS.values())
}

# Options every builder takes; anything else a builder accepts is specific to its family.
COMMON_OPTIONS = ("width_multiplier", "num_classes", "augmentation", "dropout", "bn_momentum")


def load_builders() -> None:
    """Import every builder's module, which registers its custom layers and initialisers for loading files."""
    for architecture in MODELS.values():
        architecture.load()


def family(name) -> str:
    return MODELS[canonical_name(name)].family


def available_models():
    """Every name `build_model` accepts, aliases included, sorted."""
    return sorted([*MODELS, *ALIASES])


def canonical_name(name):
    """The `MODELS` key for `name`, which may be an alias and is case-insensitive."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ConfigError(f"Unknown architecture {name!r}. Choose one of: {', '.join(available_models())}.")
    return key


def expand_names(names):
    """Canonical architecture names for a comma-separated list that may hold group names, in order, once each."""
    expanded = []
    for name in (part.strip() for part in str(names).split(",")):
        for member in GROUPS.get(name.lower(), (name,)) if name else ():
            key = canonical_name(member)
            if key not in expanded:
                expanded.append(key)
    if not expanded:
        raise ConfigError(f"no architecture named in {names!r}; groups: {', '.join(GROUPS)}")
    return expanded


def check_options(name, options) -> None:
    """Refuse family-specific options the architecture does not have, naming those it has."""
    key = canonical_name(name)
    own_options = sorted(set(inspect.signature(MODELS[key].load()).parameters) - set(COMMON_OPTIONS))
    unknown = sorted(set(options) - set(own_options))
    if unknown:
        raise ConfigError(
            f"Architecture {key!r} has no option {', '.join(map(repr, unknown))}. "
            f"Its own options are: {', '.join(own_options) or 'none'}."
        )


def build_model(name, width_multiplier=1.0, num_classes=10, augmentation=None, dropout=0.0, bn_momentum=0.9, **kwargs):
    """Builds the named architecture, uncompiled.

    Settings are checked here, where the message can name the setting, rather than failing deep
    inside a layer. `kwargs` are family-specific options such as ResNet's `zero_init_residual`.
    """
    key = canonical_name(name)
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)):
        raise ConfigError(f"width_multiplier must be a number, got {width_multiplier!r}.")
    if not width_multiplier > 0:
        raise ConfigError(f"width_multiplier must be greater than 0, got {width_multiplier!r}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer of at least 2, got {num_classes!r}.")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}.")
    if not 0 <= bn_momentum < 1:
        raise ConfigError(f"bn_momentum must be in [0, 1), got {bn_momentum!r}.")
    check_options(key, kwargs)
    return MODELS[key].load()(
        width_multiplier=width_multiplier,
        num_classes=num_classes,
        augmentation=augmentation,
        dropout=dropout,
        bn_momentum=bn_momentum,
        **kwargs,
    )
