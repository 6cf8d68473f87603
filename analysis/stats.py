"""Small-sample statistics for repeated runs: t-intervals, seed-paired differences, Holm's correction.

Why a t-interval and a paired t-test (and not Wilcoxon or a bootstrap): repeated
runs here are few (typically 3 to 10 seeds per configuration). With n = 3 pairs
the Wilcoxon signed-rank test cannot reach p < 0.05 at all (its smallest two-sided
p-value is 2 / 2**n = 0.25), and a percentile bootstrap of 3 to 5 values gives
intervals far narrower than the truth (it resamples only what it saw). The
t-interval is exact when the per-seed differences are roughly normal and widens
honestly as n shrinks (t quantile 4.30 at n = 3). Differences that are the same on
every seed (zero spread) get a zero-width interval at that difference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
# Accuracies are fractions of a few thousand images; differences below this are float noise, not data.
RESOLUTION_DECIMALS = 12
ACCURACY = (0.0, 1.0)  # where a mean accuracy can lie
DIFFERENCE = (-1.0, 1.0)  # where a mean difference of accuracies can lie


@dataclasses.dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for n < 2
    ci_low: float  # 95 % t-interval of the mean; NaN for n < 2
    ci_high: float
    p_value: float  # two-sided one-sample t-test of mean == 0; NaN for n < 2

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


def t_interval(values: Sequence[float] | np.ndarray, bounds: tuple[float, float] | None = None) -> Interval:
    """Mean, std, 95 % t-interval and the two-sided t-test p-value against 0.

    `bounds`: where the mean can lie at all (accuracies: 0..1; their differences: -1..1). With two or
    three seeds the t-interval can reach past them; cutting it there loses no coverage."""
    iv = _t_interval(values)
    if bounds is None or iv.n < 2:
        return iv
    lo, hi = bounds
    return dataclasses.replace(iv, ci_low=min(max(iv.ci_low, lo), hi), ci_high=max(min(iv.ci_high, hi), lo))


def _t_interval(values: Sequence[float] | np.ndarray) -> Interval:
    x = np.round(np.asarray(values, dtype=float), RESOLUTION_DECIMALS)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    if n == 1:
        return Interval(1, float(x[0]), math.nan, math.nan, math.nan, math.nan)
    if np.ptp(x) == 0:
        # No spread: the interval collapses onto the common value, which is then certain.
        value = float(x[0])
        return Interval(n, value, 0.0, value, value, 1.0 if value == 0 else 0.0)
    res = stats.ttest_1samp(x, 0.0)
    ci = res.confidence_interval(CONFIDENCE)
    return Interval(n, float(x.mean()), float(x.std(ddof=1)), float(ci.low), float(ci.high), float(res.pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count as comparisons)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for k, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[i]))  # step-down, kept monotone
        out[i] = running
    return out.tolist()


def points(x: float) -> str:
    """An accuracy difference in percentage points, one decimal."""
    return f"{100 * x:.1f}"


def oriented(level_a: str, level_b: str, diff: Interval) -> tuple[str, str, float, float, float]:
    """(winner, loser, CI low, CI high, mean) of the difference a - b, turned so the winner leads."""
    if diff.mean >= 0:
        return level_a, level_b, diff.ci_low, diff.ci_high, diff.mean
    return level_b, level_a, -diff.ci_high, -diff.ci_low, -diff.mean


def verdict(knob: str, level_a: str, level_b: str, diff: Interval, p_holm: float, metric: str) -> str:
    """One line: who wins by how much with what interval, or that no difference was detected."""
    if diff.n < 2:
        return f"{knob}: {level_a} vs {level_b}: too few seed-paired runs to compare (n={diff.n})"
    if math.isfinite(p_holm) and p_holm < ALPHA and diff.excludes_zero:
        win, lose, lo, hi, d = oriented(level_a, level_b, diff)
        return (
            f"{knob}: {win} beats {lose} by {points(d)} points of {metric}, "
            f"95 % CI {points(lo)} to {points(hi)} (n={diff.n} seed pairs, Holm p={p_holm:.2g})"
        )
    # The interval is per comparison; the verdict is Holm-corrected across them, so an interval that
    # excludes 0 can still fall short: say so rather than leave the reader to spot the mismatch.
    caveat = "; the unadjusted CI excludes 0, the Holm-corrected test does not" if diff.excludes_zero else ""
    return (
        f"{knob}: {level_a} vs {level_b}: no difference detected in {metric} "
        f"({level_a} - {level_b} = {points(diff.mean)} points, 95 % CI {points(diff.ci_low)} to "
        f"{points(diff.ci_high)}, n={diff.n} seed pairs, Holm p={p_holm:.2g}{caveat})"
    )


def fields(iv: Interval) -> dict[str, float | int | None]:
    """The summary.parquet columns an interval fills: n, value (its mean), std, ci_low, ci_high; a NaN
    (no spread to measure, or no run) is written as null."""
    return {
        "n": iv.n,
        "value": null(iv.mean),
        "std": null(iv.std),
        "ci_low": null(iv.ci_low),
        "ci_high": null(iv.ci_high),
    }


def null(x: Any) -> float | None:
    """A number as a float, or None for a missing one (None, NaN, pd.NA): the one NaN-to-null of the
    analysis, for table cells where null means "not measured"."""
    if x is None or x is pd.NA or (isinstance(x, float | np.floating) and math.isnan(x)):
        return None
    return float(x)
