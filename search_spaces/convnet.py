"""The ConvNet studies jointly: shape, batch norm, augmentation and optimisation in one conditional space.

Composed from the single-study spaces, so each knob is sampled exactly as there
(and only under the choice it belongs to: momentum under SGD, zoom under `complex`).
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.augmentation import define_policy
from search_spaces.base import SearchSpace
from search_spaces.depth import define_shape
from search_spaces.learning_rate import define_training
from trainables.config import BN_POSITIONS


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_shape(trial)
    trial.suggest_categorical("bn_position", BN_POSITIONS)
    define_policy(trial)
    define_training(trial)
    return {"model": "convnet"}


SPACE = SearchSpace(
    name="convnet",
    description="ConvNet: depth, width, kernel, pools, BN, augmentation, optimizer, learning rate, batch, decay",
    define=define,
    dataset="cifar100_25",
    num_samples=60,
    max_epochs=30,
)
