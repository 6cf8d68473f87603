"""The registry of named search spaces: SPACES = {name: SearchSpace}."""

from __future__ import annotations

from search_spaces import augmentation, basenet, batchnorm, convnet, depth, learning_rate, reference, reference_cub, transfer
from search_spaces.base import SearchSpace

SPACES: dict[str, SearchSpace] = {space.name: space for space in (
    basenet.SPACE,
    batchnorm.SPACE,
    depth.SPACE,
    augmentation.SPACE,
    learning_rate.SPACE,
    convnet.SPACE,
    transfer.SPACE,
    reference.SPACE,
    reference_cub.SPACE,
)}

__all__ = ["SPACES", "SearchSpace"]
