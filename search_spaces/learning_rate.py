"""How should the ConvNet be optimised: SGD (momentum, Nesterov) or Adam, learning rate, batch, weight decay."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace

BATCH_SIZES = (16, 32, 64, 128)


def define_optimizer(trial: optuna.Trial) -> None:
    """optimizer, and momentum/nesterov only under SGD (Adam has its own moment estimates)."""
    if trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd":
        trial.suggest_float("momentum", 0.0, 0.99)
        trial.suggest_categorical("nesterov", [False, True])
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)


def define_training(trial: optuna.Trial) -> None:
    """The optimisation knobs: optimizer (and its own), learning rate, batch size, weight decay."""
    define_optimizer(trial)
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    # Decoupled weight decay per step, scaled by the learning rate (keras.optimizers' weight_decay).
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_training(trial)
    return {"model": "convnet"}


SPACE = SearchSpace(
    name="learning_rate",
    description="ConvNet: sgd (momentum, nesterov) | adam x learning rate x batch size x weight decay",
    define=define,
    dataset="cifar100_25",
    num_samples=30,
    max_epochs=30,
    perturbable=("learning_rate", "momentum", "weight_decay"),
)
