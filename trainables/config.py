"""The configuration of one trial: every knob of the reference study, one name end to end.

A knob's name is the Optuna parameter, the field here and the Parquet column
(DESIGN section 5). This module imports neither TensorFlow nor Ray, so search
spaces and the table schema can use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

MODELS = ("basenet", "convnet", "resnet50", "inception_resnet_v2")
CNN_MODELS = ("basenet", "convnet")
TRANSFER_MODELS = ("resnet50", "inception_resnet_v2")
DATASETS = ("digits", "cifar100_25", "cifar100", "cub200")
OPTIMIZERS = ("sgd", "adam")
BN_POSITIONS = ("none", "before_relu", "after_relu")
AUGMENTATIONS = ("simple", "complex", "whitening")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
TRANSFER_MODES = ("extract", "finetune")

# InceptionResNetV2's stem needs at least 75x75 pixels (keras.applications).
MIN_INPUT_SIZE = {"resnet50": 32, "inception_resnet_v2": 75}


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
    # BatchNorm after each conv, before or after its ReLU (BaseNet and ConvNet). None: the model's
    # own default (MODEL_DEFAULTS), which is the reference study's network of that name.
    bn_position: str | None = None
    # ConvNet shape (DESIGN section 1); BaseNet ignores these.
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

    def __post_init__(self) -> None:
        _one_of("model", self.model, MODELS)
        for name, value in MODEL_DEFAULTS.get(self.model, {}).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: fill the model's default once, here
        if self.bn_position is None:
            object.__setattr__(self, "bn_position", "none")  # transfer models read no bn_position
        _one_of("dataset", self.dataset, DATASETS)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("bn_position", self.bn_position, BN_POSITIONS)
        _one_of("augmentation", self.augmentation, AUGMENTATIONS)
        _one_of("flip", self.flip, FLIPS)
        _one_of("transfer_mode", self.transfer_mode, TRANSFER_MODES)
        for name in ("max_epochs", "batch_size", "depth", "base_width", "kernel_size",
                     "dense_units", "head_units", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
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
        if self.model in MIN_INPUT_SIZE and self.input_size < MIN_INPUT_SIZE[self.model]:
            raise ValueError(
                f"{self.model} needs input_size >= {MIN_INPUT_SIZE[self.model]}, got {self.input_size}")

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
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        # A null knob (a table row's "not read by this trial") takes the default, which the trial ignores.
        return cls(**{k: _coerce(known[k], v) for k, v in params.items() if not _is_null(v)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applicable(self) -> frozenset[str]:
        """The knobs this trial reads: always-read ones plus those of its model, optimizer and policy."""
        return frozenset(ALWAYS_READ + MODEL_KNOBS[self.model] + OPTIMIZER_KNOBS[self.optimizer]
                         + AUGMENTATION_KNOBS[self.augmentation])

    def to_row(self) -> dict[str, Any]:
        """Every knob, None where this trial does not read it (a BaseNet row has no `depth`, an Adam row
        no `momentum`): what trials.parquet stores, so "not applicable" is never a measured level."""
        read = self.applicable()
        return {k: (v if k in read else None) for k, v in self.to_dict().items()}


# Which knobs a model, an optimizer and an augmentation policy read: declared once, here. A knob that
# no part of a trial reads is null in trials.parquet, and the analysis skips it (DESIGN section 3).
ALWAYS_READ: tuple[str, ...] = ("model", "dataset", "seed", "max_epochs", "optimizer", "learning_rate",
                                "weight_decay", "batch_size", "patience", "augmentation")
CONVNET_SHAPE = ("depth", "base_width", "kernel_size", "pool_after", "dense_units")
TRANSFER_KNOBS = ("transfer_mode", "head_units", "dropout", "input_size", "weights")
MODEL_KNOBS: dict[str, tuple[str, ...]] = {
    "basenet": ("bn_position",),
    "convnet": ("bn_position", *CONVNET_SHAPE),
    "resnet50": TRANSFER_KNOBS,
    "inception_resnet_v2": TRANSFER_KNOBS,
}
OPTIMIZER_KNOBS: dict[str, tuple[str, ...]] = {"sgd": ("momentum", "nesterov"), "adam": ()}
AUGMENTATION_KNOBS: dict[str, tuple[str, ...]] = {
    "simple": (), "complex": ("flip", "zoom_range"), "whitening": ("zca_epsilon",)}
# A model's own defaults, where they differ between models: BaseNet is the reference BaseNet (no BN);
# the ConvNet is the study's improved network, BN after every ReLU.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "basenet": {"bn_position": "none"},
    "convnet": {"bn_position": "after_relu"},
}


def knob_types() -> dict[str, type]:
    """Each knob and its Python type: the Parquet schema derives its knob columns from this."""
    return {f.name: _TYPES[f.type] for f in dataclasses.fields(TrialConfig)}


_TYPES: dict[Any, type] = {"str": str, "int": int, "float": float, "bool": bool,
                           str: str, int: int, float: float, bool: bool, "str | None": str}


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    # Optuna and Ray hand over numpy scalars and ints for floats; the schema wants exact types.
    kind = _TYPES[field.type]
    if kind is bool:
        if isinstance(value, str):
            raise ValueError(f"{field.name} must be a bool, got {value!r}")
        return bool(value)
    if kind is int:
        if float(value) != int(value):
            raise ValueError(f"{field.name} must be an integer, got {value!r}")
        return int(value)
    return kind(value)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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
