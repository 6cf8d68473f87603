"""Where does batch normalisation belong: before the ReLU, after it, or nowhere; on BaseNet (the
reference study's question) and on the ConvNet alike.

`model` is a knob of the space, so one search asks the question of both networks and the report
compares BN placements within each (paired over seeds on the grid: `--search grid --repeats R`).
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace
from search_spaces.reference import REFERENCE
from trainables.config import BN_POSITIONS


def define(trial: optuna.Trial) -> dict[str, Any]:
    trial.suggest_categorical("model", ["basenet", "convnet"])
    trial.suggest_categorical("bn_position", BN_POSITIONS)
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("optimizer", ["sgd", "adam"])
    return {}


SPACE = SearchSpace(
    name="batchnorm",
    description="BaseNet and ConvNet: BatchNorm none / before / after ReLU x learning rate x optimizer",
    define=define,
    dataset="cifar100_25",
    num_samples=24,
    max_epochs=30,
    # Both networks x the three placements at the reference hyperparameters.
    grid=[{"model": m, "bn_position": bn, **REFERENCE} for m in ("basenet", "convnet") for bn in BN_POSITIONS],
)
