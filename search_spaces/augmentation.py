"""Which augmentation helps the ConvNet (the study's network, BN after every ReLU): none (`simple`),
flips and zoom (`complex`), or ZCA (`whitening`): the study's three. The `basenet` and `convnet`
spaces add `crop_flip` (pad-and-crop plus horizontal flip) through `define_policy(trial, AUGMENTATIONS)`.

Conditional: a policy's own knobs are sampled only when that policy is chosen, so
TPE never learns from a zoom range that a `simple` trial ignored.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.base import SearchSpace
from trainables.config import FLIPS, STUDY_AUGMENTATIONS


def define_policy(trial: optuna.Trial, policies: tuple[str, ...] = STUDY_AUGMENTATIONS) -> None:
    policy = trial.suggest_categorical("augmentation", policies)
    if policy == "complex":
        trial.suggest_categorical("flip", FLIPS)
        trial.suggest_float("zoom_range", 0.0, 0.3)  # fraction of the image side; the reference used 0.2
    elif policy == "whitening":
        # Added to the covariance eigenvalues: small whitens hard (amplifies noise), large barely.
        trial.suggest_float("zca_epsilon", 1e-3, 1.0, log=True)


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_policy(trial)
    return {"model": "convnet", "bn_position": "after_relu"}


SPACE = SearchSpace(
    name="augmentation",
    description="ConvNet (BN after ReLU): augmentation simple | complex (flip, zoom) | whitening (ZCA epsilon)",
    define=define,
    dataset="cifar100_25",
    num_samples=24,
    max_epochs=30,
    # The reference study's three policies at their reference settings (TrialConfig defaults).
    grid={"model": ["convnet"], "bn_position": ["after_relu"], "augmentation": list(STUDY_AUGMENTATIONS)},
)
