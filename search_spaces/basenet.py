"""The baseline: how well does the small BaseNet do with SGD or Adam, which learning rate, which batch
size, and with BatchNorm before or after its ReLUs or none."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace
from search_spaces.learning_rate import BATCH_SIZES
from trainables.config import BN_POSITIONS


def define(trial: optuna.Trial) -> dict[str, Any]:
    trial.suggest_categorical("optimizer", ["sgd", "adam"])
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    trial.suggest_categorical("bn_position", BN_POSITIONS)
    return {"model": "basenet"}


SPACE = SearchSpace(
    name="basenet",
    description="BaseNet: optimizer sgd | adam x learning rate x batch size x BN none | before | after ReLU",
    define=define,
    dataset="cifar100_25",
    num_samples=20,
    max_epochs=30,
)
