"""The configuration of one trial: every knob of the reference study, one name end to end.

A knob's name is the Optuna parameter, the field here and the Parquet column
(docs/design.md, "Extension points"). This module imports neither TensorFlow nor Ray, so search
spaces and the table schema can use it.

Models and datasets are registries (trainables.registry): a config's `model` and `dataset` must name
a registered entry, and the model's entry declares the knobs it reads and its own defaults. Knobs a
search space declares (registry.KNOBS, e.g. a plugin's `width_multiplier`) live in `extra`, are
validated by their declaration, and read as attributes: `config.width_multiplier`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trainables import registry
from trainables.registry import is_null as _is_null

OPTIMIZERS = ("sgd", "adam")
BN_POSITIONS = ("none", "before_relu", "after_relu")
# The reference study's three policies (its grids cross exactly these), then the ones beyond it.
STUDY_AUGMENTATIONS = ("simple", "complex", "whitening")
AUGMENTATIONS = (*STUDY_AUGMENTATIONS, "crop_flip")
LR_SCHEDULES = ("constant", "cosine", "step")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
TRANSFER_MODES = ("extract", "finetune")
# Config keys that say where a trial came from, not how it trains (--warm-start: "<experiment>/<trial id>"):
# Tune keeps them in params.json beside the knobs, the tables give each a column, and a config ignores them.
WARM_START = "warm_start"
TRIAL_INFO = (WARM_START,)
# Knobs a space may declare perturbable (population-based training changes them mid-run); the epochs table
# records each one's value in force at every epoch (`set_<knob>`), so the schedule a trial went through
# is data. Float knobs of the optimizer only: anything else changes what a checkpoint holds.
PERTURBABLE_KNOBS = ("learning_rate", "momentum", "weight_decay")


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    # What is trained on what.
    model: str = "convnet"
    dataset: str = "cifar100_25"
    seed: int = 0
    max_epochs: int = 30  # full budget; ASHA's max_t, in epochs
    # Optimisation.
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # decoupled, as keras.optimizers' weight_decay
    batch_size: int = 32
    patience: int = 0  # epochs without val_loss improvement before stopping; 0 = off
    # Learning rate over the budget (trainables.schedules): `constant` is the reference study's.
    lr_schedule: str = "constant"
    # cosine and step only: linear ramp from ~0 to learning_rate, in epochs; cut to max_epochs - 1 when
    # longer (a short test search), so every schedule keeps at least one epoch of decay.
    warmup_epochs: int = 0
    label_smoothing: float = 0.0  # weight moved from the true class to the uniform distribution
    # BatchNorm after each conv, before or after its ReLU (BaseNet and ConvNet). None: the model's
    # own default (its registry entry's `defaults`), which is the reference study's network of that name.
    bn_position: str | None = None
    # ConvNet shape (docs/design.md, "What it is for"); BaseNet ignores these.
    depth: int = 5  # conv blocks
    base_width: int = 16  # filters of the first conv; doubles per block
    kernel_size: int = 3
    pool_after: str = "2,5"  # 1-based conv blocks followed by a 2x2 max-pool
    dense_units: int = 50
    # Augmentation policy and its own knobs.
    augmentation: str = "simple"
    flip: str = "horizontal_and_vertical"  # complex only
    zoom_range: float = 0.2  # complex only; fraction of the image side
    zca_epsilon: float = 0.1  # whitening only; added to covariance eigenvalues
    # Transfer learning (resnet50, inception_resnet_v2).
    transfer_mode: str = "extract"
    head_units: int = 500
    dropout: float = 0.0
    input_size: int = 224  # pixels per side fed to the backbone
    weights: str = "imagenet"  # imagenet | none | path to a weights file
    # Knobs declared by search spaces (registry.KNOBS): every registered one, at its default unless set.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        entry = registry.model(self.model)
        for name, value in entry.defaults.items():
            if name in registry.KNOBS:
                continue  # an extra knob's default is its declaration's, filled below
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: fill the model's default once, here
        if self.bn_position is None:
            object.__setattr__(self, "bn_position", "none")  # models that read no bn_position
        registry.dataset(self.dataset)
        unknown = sorted(set(self.extra) - set(registry.KNOBS))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(knob_types())}")
        extra = {}
        for name, knob in registry.KNOBS.items():
            given = self.extra.get(name)
            extra[name] = knob.coerce(entry.defaults.get(name, knob.default) if _is_null(given) else given)
        object.__setattr__(self, "extra", extra)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("bn_position", self.bn_position, BN_POSITIONS)
        _one_of("augmentation", self.augmentation, AUGMENTATIONS)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _one_of("flip", self.flip, FLIPS)
        _one_of("transfer_mode", self.transfer_mode, TRANSFER_MODES)
        for name in (
            "max_epochs",
            "batch_size",
            "depth",
            "base_width",
            "kernel_size",
            "dense_units",
            "head_units",
            "input_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.warmup_epochs and self.lr_schedule == "constant":
            raise ValueError("warmup_epochs needs lr_schedule cosine or step; constant has no warm-up")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.zoom_range < 1.0:
            raise ValueError(f"zoom_range must be in [0, 1), got {self.zoom_range}")
        if self.zca_epsilon <= 0:
            raise ValueError(f"zca_epsilon must be > 0, got {self.zca_epsilon}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        pools = self.pools if "pool_after" in self.applicable() else ()  # BaseNet reads no pool_after
        if any(p < 1 or p > self.depth for p in pools):
            raise ValueError(f"pool_after={self.pool_after!r} names blocks outside 1..depth={self.depth}")
        if entry.check is not None:
            entry.check(self)  # the model's own rules, e.g. a backbone's smallest input

    def __getattr__(self, name: str) -> Any:
        """A declared knob (registry.KNOBS) reads like a field: `config.width_multiplier`."""
        if name != "extra" and not name.startswith("__"):
            extra = self.__dict__.get("extra", {})
            if name in extra:
                return extra[name]
        raise AttributeError(f"{type(self).__name__} has no knob {name!r}")

    @property
    def pools(self) -> tuple[int, ...]:
        """The blocks after which a 2x2 max-pool follows, parsed from `pool_after`."""
        if not self.pool_after.strip():
            return ()
        try:
            return tuple(sorted({int(p) for p in self.pool_after.split(",")}))
        except ValueError:
            raise ValueError(f"pool_after must be comma-separated block numbers, got {self.pool_after!r}") from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrialConfig:
        """Build from search parameters; unknown keys fail loudly, naming them."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        declared = registry.KNOBS
        unknown = sorted(set(params) - set(known) - set(declared) - set(TRIAL_INFO))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(knob_types())}")
        # A null knob (a table row's "not read by this trial") takes the default, which the trial ignores.
        fields = {k: _coerce(known[k], v) for k, v in params.items() if k in known and not _is_null(v)}
        return cls(**fields, extra={k: v for k, v in params.items() if k in declared and not _is_null(v)})

    def to_dict(self) -> dict[str, Any]:
        """Every knob, built-in and declared, flat: what a trial's params and a table row hold."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**fields, **self.extra}

    def applicable(self) -> frozenset[str]:
        """The knobs this trial reads: always-read ones plus those of its model (its registry entry, and
        declared knobs naming it), optimizer and augmentation policy."""
        declared = tuple(k.name for k in registry.KNOBS.values() if self.model in k.models)
        return frozenset(
            ALWAYS_READ
            + registry.model(self.model).knobs
            + declared
            + OPTIMIZER_KNOBS[self.optimizer]
            + AUGMENTATION_KNOBS[self.augmentation]
            + SCHEDULE_KNOBS[self.lr_schedule]
        )

    def to_row(self) -> dict[str, Any]:
        """Every knob, None where this trial does not read it (a BaseNet row has no `depth`, an Adam row
        no `momentum`): what trials.parquet stores, so "not applicable" is never a measured level."""
        read = self.applicable()
        return {k: (v if k in read else None) for k, v in self.to_dict().items()}


# Which knobs every trial, an optimizer and an augmentation policy read; a model declares its own in its
# registry entry. A knob that no part of a trial reads is null in trials.parquet, and the analysis skips
# it (docs/design.md, "The tables").
ALWAYS_READ: tuple[str, ...] = (
    "model",
    "dataset",
    "seed",
    "max_epochs",
    "optimizer",
    "learning_rate",
    "weight_decay",
    "batch_size",
    "patience",
    "augmentation",
    "lr_schedule",
    "label_smoothing",
)
OPTIMIZER_KNOBS: dict[str, tuple[str, ...]] = {"sgd": ("momentum", "nesterov"), "adam": ()}
AUGMENTATION_KNOBS: dict[str, tuple[str, ...]] = {
    "simple": (),
    "complex": ("flip", "zoom_range"),
    "whitening": ("zca_epsilon",),
    "crop_flip": (),  # its padding is fixed, an eighth of the image side (4 px at 32x32)
}
SCHEDULE_KNOBS: dict[str, tuple[str, ...]] = {"constant": (), "cosine": ("warmup_epochs",), "step": ("warmup_epochs",)}


def knob_types(declared: bool = True) -> dict[str, type]:
    """Each knob and its Python type, built-in fields first, then (with `declared`) the knobs search
    spaces declared (registry.KNOBS): the Parquet schema derives its knob columns from this."""
    types = {f.name: _TYPES[f.type] for f in dataclasses.fields(TrialConfig) if f.name != "extra"}
    if declared:
        types.update({k.name: registry.KNOB_TYPES[k.type] for k in registry.KNOBS.values()})
    return types


_TYPES: dict[Any, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    str: str,
    int: int,
    float: float,
    bool: bool,
    "str | None": str,
}
registry.RESERVED_KNOBS.update(knob_types(declared=False))  # a space may not redeclare a built-in knob


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    return registry.coerce(field.name, _TYPES[field.type], value)


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def conv_feature_sizes(config: TrialConfig, image_size: int) -> list[int]:
    """Feature-map side after each ConvNet block ('valid' convs, 2x2 pools); pure arithmetic.

    Search spaces use it to avoid sampling a ConvNet whose map shrinks below 1x1.
    """
    sizes, side = [], image_size
    for block in range(1, config.depth + 1):
        side = side - config.kernel_size + 1
        if block in config.pools:
            side //= 2
        sizes.append(side)
    return sizes


def min_image_size(config: TrialConfig) -> int:
    """The smallest image side a ConvNet of `config` keeps at least 1x1 after its last block: the
    inverse of conv_feature_sizes, from the last block back (a 2x2 pool halves, rounding down, so it needs
    twice the side after it; a 'valid' conv needs kernel_size - 1 pixels more)."""
    side = 1
    for block in range(config.depth, 0, -1):
        if block in config.pools:
            side *= 2
        side += config.kernel_size - 1
    return side
