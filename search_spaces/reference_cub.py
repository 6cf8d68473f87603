"""The reference study's three CUB-200-2011 cells, for `--search grid`: ResNet50 as a frozen feature
extractor, ResNet50 fine-tuned, and InceptionResNetV2 as a feature extractor; each with a 500-unit
head, SGD at learning rate 0.01 without momentum, batch 32, a few epochs (the study's budget on CUB).
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SchedulerSettings, SearchSpace
from search_spaces.reference import REFERENCE

HEAD = {"head_units": 500, "augmentation": "simple", **REFERENCE}

CELLS: list[dict[str, Any]] = [
    {"model": "resnet50", "transfer_mode": "extract", **HEAD},
    {"model": "resnet50", "transfer_mode": "finetune", **HEAD},
    {"model": "inception_resnet_v2", "transfer_mode": "extract", **HEAD},
]


def define(trial: optuna.Trial) -> dict[str, Any]:
    """For --search optuna|random: the cells as one categorical knob each."""
    trial.suggest_categorical("model", ["resnet50", "inception_resnet_v2"])
    trial.suggest_categorical("transfer_mode", ["extract", "finetune"])
    return dict(HEAD)


SPACE = SearchSpace(
    name="reference_cub",
    description="the reference study's CUB-200 cells: ResNet50 extract | finetune, InceptionResNetV2 extract",
    define=define,
    dataset="cub200",
    num_samples=len(CELLS),
    max_epochs=5,
    grid=CELLS,
    gpus_per_trial=1.0,
    # No CUB learning curves were recorded (benchmarks/README.md, "Early stopping"): the settings
    # ASHA ran at before they were measured stay, a rung after every epoch of a short budget.
    scheduler=SchedulerSettings(grace_period=1, stop_on="last"),
)
