"""The ConvNet studies jointly: shape, batch norm, augmentation and the training recipe in one
conditional space.

Composed from the single-study spaces and search_spaces.training (the recipe `basenet` samples too:
schedule, warm-up, label smoothing, SGD with momentum and decay), so each knob is sampled exactly as
there and only under the choice it belongs to: momentum under SGD, zoom under `complex`, warm-up
under a decaying schedule. The augmentation policies are the study's three and `crop_flip`.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.augmentation import define_policy
from search_spaces.base import SearchSpace
from search_spaces.depth import define_shape
from search_spaces.training import define_recipe
from trainables.config import AUGMENTATIONS, BN_POSITIONS


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_shape(trial)
    trial.suggest_categorical("bn_position", BN_POSITIONS)
    define_policy(trial, AUGMENTATIONS)
    define_recipe(trial)
    return {"model": "convnet"}


SPACE = SearchSpace(
    name="convnet",
    description="ConvNet: depth, width, kernel, pools, BN, augmentation (incl. crop_flip), optimizer, lr, batch, "
    "decay, lr schedule (warm-up), label smoothing",
    define=define,
    dataset="cifar100_25",
    num_samples=60,
    max_epochs=30,
)
