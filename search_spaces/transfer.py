"""Transfer learning on CUB-200: which ImageNet backbone, frozen or fine-tuned, which head.

A backbone trial wants a whole GPU: `gpus_per_trial` 1 is the default on a cluster
with GPUs (run_search.py falls back to 0 where Ray sees none).
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SchedulerSettings, SearchSpace
from trainables.config import TRANSFER_MODES


def define(trial: optuna.Trial) -> dict[str, Any]:
    trial.suggest_categorical("model", ["resnet50", "inception_resnet_v2"])
    trial.suggest_categorical("transfer_mode", TRANSFER_MODES)
    trial.suggest_categorical("head_units", [500, 1024])
    trial.suggest_float("dropout", 0.0, 0.5)
    # Small rates: fine-tuning with a large one wipes out the ImageNet features.
    trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    return {"optimizer": "sgd", "momentum": 0.9}


SPACE = SearchSpace(
    name="transfer",
    description="ResNet50 | InceptionResNetV2 backbone x extract | finetune x head width x dropout x learning rate",
    define=define,
    dataset="cub200",
    num_samples=16,
    max_epochs=20,
    gpus_per_trial=1.0,
    # No CUB learning curves were recorded (benchmarks/README.md, "Early stopping"): the settings
    # ASHA ran at before they were measured stay, a rung after every epoch of a short budget.
    scheduler=SchedulerSettings(grace_period=1, stop_on="last"),
)
