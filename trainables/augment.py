"""Augmentation policies as batched transforms of uint8 image batches.

`simple` is the only policy so far: scale to [0, 1]. Validation and test batches
get the deterministic part of a policy only.
"""

from __future__ import annotations

import numpy as np

from trainables.config import TrialConfig
from trainables.data import ImageDataset
from trainables.pipeline import BatchFn, to_unit_float


def policy_transforms(config: TrialConfig, data: ImageDataset,
                      train_idx: np.ndarray) -> tuple[BatchFn, BatchFn]:
    """(training transform, evaluation transform) of the config's augmentation policy."""
    if config.augmentation == "simple":
        return to_unit_float, to_unit_float
    raise NotImplementedError(f"augmentation {config.augmentation!r} is not implemented yet")
