"""How deep and wide should the ConvNet be: 2..6 conv blocks, base width, kernel 3|5, where to pool.

Every sampled combination is valid: with 'valid' padding each block shrinks the map
by kernel_size - 1 pixels and each 2x2 pool halves it, so an arbitrary (depth, kernel,
pools) can shrink a 32px image below 1x1. The order of sampling keeps it valid
without pruning: `pool_after` first, from a fixed list of patterns (Optuna needs the
same categorical choices in every trial), then `depth` and `kernel_size` as integer
ranges narrowed to what that pattern allows (Optuna accepts integer ranges that vary).
"""

from __future__ import annotations

import itertools
from typing import Any

import optuna

from search_spaces.base import IMAGE_SIZE, SearchSpace
from trainables.config import TrialConfig, conv_feature_sizes

MIN_DEPTH, MAX_DEPTH = 2, 6
KERNEL_SIZES = (3, 5)
BASE_WIDTHS = (8, 16, 32)
MAX_POOLS = 2  # the reference ConvNet pools twice; a third 2x2 pool leaves too little of 32px


def fits(depth: int, kernel_size: int, pool_after: str, image_size: int = IMAGE_SIZE) -> bool:
    """True when every block's feature map stays at least 1x1."""
    if pool_after and max(int(p) for p in pool_after.split(",")) > depth:
        return False
    config = TrialConfig(depth=depth, kernel_size=kernel_size, pool_after=pool_after)
    return min(conv_feature_sizes(config, image_size)) >= 1


def _pattern(blocks: tuple[int, ...]) -> str:
    return ",".join(str(b) for b in blocks)


def _min_depth(pool_after: str) -> int:
    return max([MIN_DEPTH] + [int(p) for p in pool_after.split(",") if p])


# Pool patterns (at most MAX_POOLS pools) that fit at least with the smallest kernel at their
# smallest depth; sampling depth/kernel after the pattern then always has a valid choice.
POOL_PATTERNS: tuple[str, ...] = tuple(
    _pattern(blocks)
    for n in range(MAX_POOLS + 1)
    for blocks in itertools.combinations(range(1, MAX_DEPTH + 1), n)
    if fits(_min_depth(_pattern(blocks)), min(KERNEL_SIZES), _pattern(blocks))
)


def define_shape(trial: optuna.Trial) -> None:
    """Sample pool_after, depth, kernel_size and base_width so that the ConvNet always fits."""
    pool_after = trial.suggest_categorical("pool_after", POOL_PATTERNS)
    low = _min_depth(pool_after)
    high = max(d for d in range(low, MAX_DEPTH + 1) if fits(d, min(KERNEL_SIZES), pool_after))
    depth = trial.suggest_int("depth", low, high)
    # kernel_size is 3 or 5: an integer range with step 2, capped at 3 where 5 would not fit.
    kernels = [k for k in KERNEL_SIZES if fits(depth, k, pool_after)]
    trial.suggest_int("kernel_size", min(kernels), max(kernels), step=2)
    trial.suggest_categorical("base_width", BASE_WIDTHS)


def define(trial: optuna.Trial) -> dict[str, Any]:
    define_shape(trial)
    return {"model": "convnet"}


SPACE = SearchSpace(
    name="depth",
    description="ConvNet: 2..6 conv blocks x base width x kernel 3|5 x pooling positions (always fits 32px)",
    define=define,
    dataset="cifar100_25",
    num_samples=30,
    max_epochs=30,
)
