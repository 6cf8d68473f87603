"""BaseNet trained the way current practice trains a small CNN: the training recipe of
search_spaces.training (SGD with momentum and weight decay or Adam, learning rate, batch, schedule
with warm-up, label smoothing), BN none / before / after ReLU, and the augmentation policy (the
study's three or `crop_flip`, each with its own knobs). The network itself is the study's."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.augmentation import define_policy
from search_spaces.base import SearchSpace
from search_spaces.training import PERTURBABLE, define_recipe
from trainables.config import AUGMENTATIONS, BN_POSITIONS


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_recipe(trial)
    trial.suggest_categorical("bn_position", BN_POSITIONS)
    define_policy(trial, AUGMENTATIONS)
    return {"model": "basenet"}


SPACE = SearchSpace(
    name="basenet",
    description="BaseNet: sgd (momentum, nesterov, decay) | adam x lr x batch x lr schedule (warm-up) x label "
    "smoothing x BN none | before | after ReLU x augmentation (incl. crop_flip)",
    define=define,
    dataset="cifar100_25",
    num_samples=30,
    max_epochs=30,
    perturbable=PERTURBABLE,
)
