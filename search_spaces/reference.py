"""The reference study's six CIFAR cells, for `--search grid`, exactly as the study ran them.

BaseNet; BaseNet + BN before ReLU; BaseNet + BN after ReLU (where does BatchNorm belong on BaseNet?);
the ConvNet with BN after every ReLU under `simple`, `complex` and `whitening` augmentation (which
augmentation helps the ConvNet?). All SGD, learning rate 0.01, no momentum, batch 32, 30 epochs.
The three CUB-200 cells are the `reference_cub` space: a CUB run cannot share a dataset with these.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace
from trainables.config import BN_POSITIONS, STUDY_AUGMENTATIONS

REFERENCE = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.0, "batch_size": 32}

CELLS: list[dict[str, Any]] = [
    *({"model": "basenet", "bn_position": bn, "augmentation": "simple", **REFERENCE} for bn in BN_POSITIONS),
    *(
        {"model": "convnet", "bn_position": "after_relu", "augmentation": aug, **REFERENCE}
        for aug in STUDY_AUGMENTATIONS
    ),
]


def define(trial: optuna.Trial) -> dict[str, Any]:
    """For --search optuna|random: the same two questions, BN placement on BaseNet or augmentation on
    the ConvNet (BN after ReLU)."""
    if trial.suggest_categorical("model", ["basenet", "convnet"]) == "basenet":
        trial.suggest_categorical("bn_position", BN_POSITIONS)
        return {**REFERENCE, "augmentation": "simple"}
    trial.suggest_categorical("augmentation", STUDY_AUGMENTATIONS)
    return {**REFERENCE, "bn_position": "after_relu"}


SPACE = SearchSpace(
    name="reference",
    description="the reference study's CIFAR cells: BaseNet x BN placement; ConvNet (BN after ReLU) x augmentation",
    define=define,
    dataset="cifar100_25",
    num_samples=len(CELLS),
    max_epochs=30,
    grid=CELLS,
)
