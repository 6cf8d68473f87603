"""The registry of named search spaces: SPACES = {name: SearchSpace}, filled by register_space.

Built-in spaces register here exactly as a plugin's do (`--plugin FILE`): `register_space(SPACE)`. Every
module of this package that defines a `SPACE` is a built-in space, found when the package is imported:
a new space is one new file, and nothing lists it (as trainables/models/ for networks).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

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


def _register_built_ins() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        space = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPACE", None)
        if isinstance(space, SearchSpace):
            register_space(space)


_register_built_ins()

__all__ = ["SPACES", "SearchSpace", "register_space"]
