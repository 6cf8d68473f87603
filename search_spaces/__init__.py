"""The registry of named search spaces: SPACES = {name: SearchSpace}."""

from __future__ import annotations

from search_spaces import batchnorm
from search_spaces.base import SearchSpace

SPACES: dict[str, SearchSpace] = {space.name: space for space in (
    batchnorm.SPACE,
)}

__all__ = ["SPACES", "SearchSpace"]
