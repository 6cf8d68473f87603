"""Where does batch normalisation belong: before the ReLU, after it, or nowhere?"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace


def define(trial: optuna.Trial) -> dict[str, Any]:
    trial.suggest_categorical("bn_position", ["none", "before_relu", "after_relu"])
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("optimizer", ["sgd", "adam"])
    return {"model": "convnet"}


SPACE = SearchSpace(
    name="batchnorm",
    description="ConvNet: BatchNorm none / before / after ReLU x learning rate x optimizer",
    define=define,
    dataset="cifar100_25",
    num_samples=24,
    max_epochs=30,
)
