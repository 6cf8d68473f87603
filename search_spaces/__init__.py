"""The registry of named search spaces: SPACES = {name: SearchSpace}, filled by register_space.

Built-in spaces register here exactly as a plugin's do (`--plugin FILE`): `register_space(SPACE)`.
"""

from __future__ import annotations

import dataclasses

from search_spaces import (
    augmentation,
    basenet,
    batchnorm,
    convnet,
    depth,
    learning_rate,
    reference,
    reference_cub,
    transfer,
)
from search_spaces.base import SearchSpace
from trainables import registry

SPACES: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    """Add `space` and the knobs it declares; a name already taken is refused (registry.RegistryError)."""
    origin = registry.current_origin()
    if origin != registry.BUILT_IN and space.origin == registry.BUILT_IN:
        space = dataclasses.replace(space, origin=origin)
    if space.name in SPACES:
        raise registry.RegistryError(
            f"space {space.name!r} is already registered (by {SPACES[space.name].origin}); pick another name"
        )
    for knob in space.knobs:
        registry.register_knob(knob)
    SPACES[space.name] = space
    return space


for _module in (basenet, batchnorm, depth, augmentation, learning_rate, convnet, transfer, reference, reference_cub):
    register_space(_module.SPACE)

__all__ = ["SPACES", "SearchSpace", "register_space"]
