"""The ConvNet studies jointly: shape, batch norm, augmentation and the training recipe in one
conditional space.

Composed from the single-study spaces and search_spaces.training (the recipe `basenet` samples too:
schedule, warm-up, label smoothing, SGD with momentum and decay), so each knob is sampled exactly as
there and only under the choice it belongs to: momentum under SGD, zoom under `complex`, warm-up
under a decaying schedule. The augmentation policies are the study's three and `crop_flip`.

Shapes are capped at the reference ConvNet's compute (MAX_MACS: its 32.9 M conv MACs per image), which
the `depth` space is not: the widest, deepest shapes there cost up to 82x the reference, and measured
on two CPU cores one 30-epoch trial of them takes hours (774 s an epoch at depth 6, width 32, pools after
5 and 6), so an uncapped 16-trial search cannot finish in a day. Under the cap the sampled shapes cost
0.45x the reference on average, the reference shape is one of them, and a tuned network that beats the
study's cells does so without more compute per image than they had.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.augmentation import define_policy
from search_spaces.base import SearchSpace
from search_spaces.depth import REFERENCE_MACS, define_shape
from search_spaces.training import PERTURBABLE, define_recipe
from trainables.config import AUGMENTATIONS, BN_POSITIONS

MAX_MACS = 1.0 * REFERENCE_MACS  # conv MACs per 32px image; see the module's docstring


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_shape(trial, MAX_MACS)
    trial.suggest_categorical("bn_position", BN_POSITIONS)
    define_policy(trial, AUGMENTATIONS)
    define_recipe(trial)
    return {"model": "convnet"}


SPACE = SearchSpace(
    name="convnet",
    description="ConvNet (at most the reference's MACs): depth, width, kernel, pools, BN, augmentation "
    "(incl. crop_flip), optimizer, lr, batch, "
    "decay, lr schedule (warm-up), label smoothing",
    define=define,
    dataset="cifar100_25",
    num_samples=60,
    max_epochs=30,
    perturbable=PERTURBABLE,
)
