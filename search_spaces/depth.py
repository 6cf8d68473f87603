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


def conv_macs(depth: int, kernel_size: int, pool_after: str, base_width: int, image_size: int = IMAGE_SIZE) -> int:
    """Multiply-accumulates per RGB image of the ConvNet's conv blocks (filters base_width * 2**i), the
    count trainables.cost makes of the built model less its dense head and BatchNorms (<1 % of it)."""
    config = TrialConfig(depth=depth, kernel_size=kernel_size, pool_after=pool_after, base_width=base_width)
    total, side, channels = 0, image_size, 3
    for block in range(1, depth + 1):
        side = side - kernel_size + 1
        filters = base_width * 2 ** (block - 1)
        total += side * side * kernel_size * kernel_size * channels * filters
        channels = filters
        if block in config.pools:
            side //= 2
    return total


# The reference ConvNet's conv MACs per 32px image (depth 5, base width 16, 3x3, pools after 2 and 5):
# 32.9 M. The unit of a space's compute cap.
REFERENCE_MACS = conv_macs(5, 3, "2,5", 16)


def _allowed(depth: int, kernel_size: int, pool_after: str, base_width: int, max_macs: float | None) -> bool:
    if not fits(depth, kernel_size, pool_after):
        return False
    return max_macs is None or conv_macs(depth, kernel_size, pool_after, base_width) <= max_macs


WIDTH_STEP = 8  # base widths under a compute cap: 8, 16, 24, 32, cut to the cap


def pool_patterns(max_macs: float | None = None) -> tuple[str, ...]:
    """The patterns that admit at least the narrowest, shallowest shape under the cap."""
    narrowest = min(BASE_WIDTHS)
    return tuple(p for p in POOL_PATTERNS if _allowed(_min_depth(p), min(KERNEL_SIZES), p, narrowest, max_macs))


def define_shape(trial: optuna.Trial, max_macs: float | None = None) -> None:
    """Sample pool_after, depth, kernel_size and base_width so that the ConvNet always fits.

    Given max_macs, the shape also costs at most that many conv MACs per image: depth and kernel are
    narrowed to what the narrowest width allows, then the width to what the shape allows. Optuna keeps a
    categorical's choices fixed but accepts integer ranges that vary, so under a cap base_width is an
    integer in steps of WIDTH_STEP instead of the categorical 8 | 16 | 32.
    """
    patterns = POOL_PATTERNS if max_macs is None else pool_patterns(max_macs)
    pool_after = trial.suggest_categorical("pool_after", patterns)
    narrowest = min(BASE_WIDTHS)
    low = _min_depth(pool_after)
    high = max(d for d in range(low, MAX_DEPTH + 1) if _allowed(d, min(KERNEL_SIZES), pool_after, narrowest, max_macs))
    depth = trial.suggest_int("depth", low, high)
    # kernel_size is 3 or 5: an integer range with step 2, capped at 3 where 5 would not fit.
    kernels = [k for k in KERNEL_SIZES if _allowed(depth, k, pool_after, narrowest, max_macs)]
    kernel_size = trial.suggest_int("kernel_size", min(kernels), max(kernels), step=2)
    if max_macs is None:
        trial.suggest_categorical("base_width", BASE_WIDTHS)
        return
    widths = range(narrowest, max(BASE_WIDTHS) + 1, WIDTH_STEP)
    widest = max(w for w in widths if _allowed(depth, kernel_size, pool_after, w, max_macs))
    trial.suggest_int("base_width", narrowest, widest, step=WIDTH_STEP)


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
