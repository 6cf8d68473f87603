"""The reference study's cells, for `--search grid`: BaseNet; ConvNet with BN none / before / after ReLU;
ConvNet with each augmentation policy. Every cell is fully specified with the reference
hyperparameters (SGD, learning rate 0.01, no momentum, batch 32).

ConvNet with BN none and augmentation `simple` is one cell, shared by the BN and the
augmentation comparison (it is the baseline of both), so the grid has 6 cells, not 7.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace
from trainables.config import AUGMENTATIONS, BN_POSITIONS

REFERENCE = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.0, "batch_size": 32}

CELLS: list[dict[str, Any]] = [
    {"model": "basenet", "bn_position": "none", "augmentation": "simple", **REFERENCE},
    *({"model": "convnet", "bn_position": bn, "augmentation": "simple", **REFERENCE} for bn in BN_POSITIONS),
    *({"model": "convnet", "bn_position": "none", "augmentation": aug, **REFERENCE}
      for aug in AUGMENTATIONS if aug != "simple"),
]


def define(trial: optuna.Trial) -> dict[str, Any]:
    """For --search optuna|random: the same factors, crossed (BN x augmentation) on the ConvNet."""
    if trial.suggest_categorical("model", ["basenet", "convnet"]) == "convnet":
        trial.suggest_categorical("bn_position", BN_POSITIONS)
        trial.suggest_categorical("augmentation", AUGMENTATIONS)
    return dict(REFERENCE)


SPACE = SearchSpace(
    name="reference",
    description="the reference study's cells: BaseNet; ConvNet x BN placement; ConvNet x augmentation",
    define=define,
    dataset="cifar100_25",
    num_samples=len(CELLS),
    max_epochs=30,
    grid=CELLS,
)
