"""Answers that settle: seed-paired comparisons with three outcomes, looked at again after every seed.

A comparison of two levels (or two configurations) is the paired t-test of their per-seed differences,
as everywhere in the report (analysis.stats says why t). It has one of three outcomes:

- `better`: the Holm-adjusted p-value (times the looks, below) is under alpha = 0.05, so one level wins;
- `equivalent`: the difference lies within the resolution (`--resolution`, default 1 point): the
  two one-sided tests (TOST) at the comparison's level reject "the difference is at least the resolution
  in either direction", i.e. |mean| + t(1 - level, n - 1) * se <= resolution;
- `open`: neither; more seeds could settle it.

Error control when the race looks after every round (the procedure; analysis/README.md names it):
a Bonferroni split of alpha over the looks, with Holm across the comparisons of one family at each look.
A comparison seen at n = min, min + 1, ..., max seeds is tested at most looks = max - min + 1 times on
different data, so testing each look at alpha / looks keeps the chance of any false `better` (or false
`equivalent`) verdict over the whole race at or below alpha (the union bound), and Holm at each look
keeps it across the family. Why Bonferroni and not a Pocock or alpha-spending boundary: those are
calibrated for one comparison looked at on a fixed, equally spaced schedule; here a comparison's seeds
grow only while one of its cells is still open for some comparison, configurations are dropped and the
leader of a race changes, so the schedule depends on the data. The union bound holds whatever the
schedule, with nothing to calibrate. Its price, measured by tests/analysis/test_sequential.py: at 3 to
10 seeds (8 looks) the realised false-`better` rate of one comparison is about half of alpha (0.6 % for
a family of three), and a difference of two standard deviations of the per-seed difference is found
with 5.8 seeds on average (power 0.99) where a fixed design of that power needs 7; a difference of one
standard deviation costs more seeds than a fixed design would (racing pays where answers are clear).

The level one comparison is held to (`level`: its minimum detectable difference and equivalence bound
use it) is alpha / (comparisons in the family x looks): Holm's first step, the strictest a comparison of
the family meets, so the minimum detectable difference is what a comparison needs whatever its rank.

Everything here works on numpy arrays with a leading batch axis (many simulated races at once) and
imports neither Ray nor TensorFlow; tuning.racing runs the same decisions one race at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as sps

from analysis import stats
from analysis.knobs import level_text

ALPHA = stats.ALPHA
POWER = 0.8  # of the minimum detectable difference
MIN_REPEATS, MAX_REPEATS = 3, 10  # --min-repeats, --max-repeats defaults
RESOLUTION_POINTS = 1.0  # --resolution default, accuracy points
BETTER, EQUIVALENT, OPEN = "better", "equivalent", "open"
OUTCOMES = (BETTER, EQUIVALENT, OPEN)


@dataclasses.dataclass(frozen=True)
class Design:
    """How comparisons are judged: `looks` (1 for a fixed number of seeds; a race's max - min + 1),
    `resolution` (accuracy, not points: 0.01 = 1 point), alpha. `min_repeats`/`max_repeats`: a race's
    seeds per cell or configuration (None without a race)."""

    looks: int = 1
    resolution: float = RESOLUTION_POINTS / 100
    alpha: float = ALPHA
    min_repeats: int | None = None
    max_repeats: int | None = None

    @property
    def raced(self) -> bool:
        return self.min_repeats is not None

    def level(self, comparisons: int) -> float:
        """The two-sided level one comparison of a family of `comparisons` is tested at, per look."""
        return self.alpha / (max(1, comparisons) * self.looks)

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def race_design(
    min_repeats: int | None, max_repeats: int | None, resolution_points: float | None, alpha: float = ALPHA
) -> Design:
    """The design of `--repeats auto`; ValueError names the flag that is wrong."""
    lo = MIN_REPEATS if min_repeats is None else min_repeats
    hi = MAX_REPEATS if max_repeats is None else max_repeats
    if lo < 2:
        raise ValueError(f"--min-repeats must be >= 2 (a paired interval needs two seeds), got {lo}")
    if hi < lo:
        raise ValueError(f"--max-repeats {hi} is below --min-repeats {lo}; raise --max-repeats")
    return Design(
        looks=hi - lo + 1, resolution=resolution(resolution_points), alpha=alpha, min_repeats=lo, max_repeats=hi
    )


def resolution(points: float | None) -> float:
    """--resolution POINTS as an accuracy difference; ValueError unless positive."""
    value = RESOLUTION_POINTS if points is None else float(points)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--resolution must be a positive number of accuracy points, got {points}")
    return value / 100


def design_from_meta(meta: Mapping[str, Any]) -> Design:
    """The design an experiment ran under, from experiment.json's stored arguments (older experiments:
    a fixed design at the default resolution)."""
    args = meta.get("args") or {}
    try:
        if args.get("repeats") == "auto":
            return race_design(args.get("min_repeats"), args.get("max_repeats"), args.get("resolution"))
        return Design(resolution=resolution(args.get("resolution")))
    except (TypeError, ValueError):
        return Design()


# ---------------------------------------------------------------- paired statistics, vectorised


@dataclasses.dataclass(frozen=True)
class Assessment:
    """Per comparison (arrays of one shape; the last axis is the family): seed pairs, mean difference,
    its sd and se, the two-sided p-value, the Holm-and-looks adjusted p-value, the level, the equivalence
    bound (the data support |difference| < bound), the minimum detectable difference and the outcome."""

    n: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    se: np.ndarray
    p: np.ndarray
    p_adjusted: np.ndarray
    level: np.ndarray
    bound: np.ndarray
    mdd: np.ndarray
    outcome: np.ndarray  # strings: BETTER, EQUIVALENT, OPEN

    def at(self, *index: int) -> dict[str, Any]:
        """One comparison's numbers as Python scalars (NaN where there is none)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)[index]
            if f.name == "outcome":
                out[f.name] = str(v)
            elif f.name == "n":
                out[f.name] = int(v) if np.isfinite(v) else 0
            else:
                out[f.name] = float(v)
        return out


def summarize(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean, sd) over the last axis, NaN meaning "no such seed pair". Values are rounded as
    analysis.stats rounds them, so differences equal on every seed have exactly zero spread."""
    x = np.round(np.asarray(diffs, dtype=float), stats.RESOLUTION_DECIMALS)
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    filled = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, filled.sum(axis=-1) / np.maximum(n, 1), np.nan)
        dev = np.where(ok, x - mean[..., None], 0.0)
        var = np.where(n > 1, (dev**2).sum(axis=-1) / np.maximum(n - 1, 1), np.nan)
    sd = np.sqrt(np.where(var < 1e-24, 0.0, var))  # float noise of identical values is no spread
    return n, mean, sd


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis; NaNs stay NaN and are not counted (analysis.stats.holm,
    for arrays)."""
    p = np.asarray(p, dtype=float)
    finite = np.isfinite(p)
    m = finite.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(np.where(finite, p, 1.0), order, axis=-1)
    k = np.arange(p.shape[-1])
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - k) * ranked), axis=-1)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(finite, out, np.nan)


def two_sided_p(n: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Paired t-test of mean == 0; no spread gives 0 (a difference on every seed) or 1 (none)."""
    n, mean, sd = np.broadcast_arrays(np.asarray(n), np.asarray(mean, dtype=float), np.asarray(sd, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(mean) / (sd / np.sqrt(np.maximum(n, 1)))
        p = 2 * sps.t.sf(t, np.maximum(n - 1, 1))
    p = np.where(sd == 0, np.where(mean == 0, 1.0, 0.0), p)
    return np.where((n >= 2) & np.isfinite(mean) & np.isfinite(sd), p, np.nan)


@functools.lru_cache(maxsize=4096)
def _mdd_ncp(df: int, level: float, power: float) -> float:
    """The noncentrality at which a two-sided t-test with `df` degrees of freedom at `level` rejects
    with probability `power`."""
    crit = sps.t.ppf(1 - level / 2, df)

    def gap(ncp: float) -> float:
        return _rejects(crit, df, ncp) - power

    hi = crit + 10.0
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-10))


def mdd(n: Any, sd: Any, level: Any, power: float = POWER) -> np.ndarray:
    """Minimum detectable difference: the true mean difference a two-sided paired t-test over n seed pairs
    at `level` finds with probability `power`, when the per-seed differences have standard deviation sd
    (the observed one: a plug-in). The noncentral t with n - 1 degrees of freedom, solved for its
    noncentrality: mdd = ncp * sd / sqrt(n). NaN below two pairs."""
    n, sd, level = np.broadcast_arrays(np.asarray(n), np.asarray(sd, dtype=float), np.asarray(level, dtype=float))
    out = np.full(n.shape, np.nan)
    for idx in np.ndindex(n.shape):
        if n[idx] >= 2 and np.isfinite(sd[idx]) and np.isfinite(level[idx]):
            out[idx] = _mdd_ncp(int(n[idx]) - 1, float(level[idx]), power) * sd[idx] / math.sqrt(n[idx])
    return out


def _rejects(crit: float, df: int, ncp: float) -> float:
    """P(|T| > crit) for T noncentral t (df, ncp); scipy's far tail (NaN there) is 0."""
    upper, lower = float(sps.nct.sf(crit, df, ncp)), float(sps.nct.cdf(-crit, df, ncp))
    return (upper if math.isfinite(upper) else 0.0) + (lower if math.isfinite(lower) else 0.0)


def power(n: int, difference: float, sd: float, level: float) -> float:
    """Power of the two-sided paired t-test over n seed pairs at `level` against a true difference."""
    df, ncp = n - 1, difference * math.sqrt(n) / sd
    return _rejects(float(sps.t.ppf(1 - level / 2, df)), df, ncp)


def equivalence_bound(n: np.ndarray, mean: np.ndarray, sd: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The smallest X for which TOST at `level` concludes |difference| < X: |mean| + t(1 - level) * se,
    the far end of the (1 - 2 level) interval. NaN below two pairs."""
    n, mean, sd, level = np.broadcast_arrays(
        np.asarray(n), np.asarray(mean, dtype=float), np.asarray(sd, dtype=float), np.asarray(level, dtype=float)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        q = sps.t.ppf(1 - level, np.maximum(n - 1, 1))
        bound = np.abs(mean) + q * np.where(sd == 0, 0.0, sd / np.sqrt(np.maximum(n, 1)))
    return np.where(n >= 2, bound, np.nan)


def assess(
    n: np.ndarray,
    mean: np.ndarray,
    sd: np.ndarray,
    design: Design,
    family: int | np.ndarray | None = None,
    with_mdd: bool = True,
) -> Assessment:
    """The three outcomes for comparisons whose last axis is one family. `family`: how many comparisons
    the family counts (default: those with two or more pairs, per row)."""
    n = np.asarray(n)
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    p = two_sided_p(n, mean, sd)
    m = np.isfinite(p).sum(axis=-1, keepdims=True) if family is None else np.asarray(family)
    level = np.broadcast_to(design.alpha / (np.maximum(m, 1) * design.looks), n.shape).astype(float)
    adjusted = np.minimum(1.0, holm(p) * design.looks)
    bound = equivalence_bound(n, mean, sd, level)
    better = np.isfinite(adjusted) & (adjusted < design.alpha) & (mean != 0)
    equivalent = np.isfinite(bound) & (bound <= design.resolution + 1e-12)
    outcome = np.where(better, BETTER, np.where(equivalent, EQUIVALENT, OPEN))
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(n >= 2, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return Assessment(
        n=n,
        mean=mean,
        sd=sd,
        se=se,
        p=p,
        p_adjusted=adjusted,
        level=level,
        bound=bound,
        mdd=mdd(n, sd, level) if with_mdd else np.full(n.shape, np.nan),
        outcome=outcome,
    )


def assess_differences(families: Sequence[np.ndarray], design: Design) -> Assessment:
    """One family of comparisons, each given by its per-seed differences (1-d arrays of any length); the
    assessment's arrays are (1, comparisons)."""
    width = max([len(d) for d in families] + [1])
    padded = np.full((1, len(families), width), np.nan)
    for i, d in enumerate(families):
        padded[0, i, : len(d)] = d
    return assess(*summarize(padded), design)


def assess_intervals(intervals: Sequence[stats.Interval], design: Design) -> list[dict[str, Any]]:
    """One family of comparisons given by their analysis.stats intervals (n, mean, std): each one's
    numbers (Assessment.at), in order."""
    if not intervals:
        return []
    n = np.array([[iv.n for iv in intervals]])
    mean = np.array([[iv.mean for iv in intervals]], dtype=float)
    sd = np.array([[iv.std if iv.n >= 2 else math.nan for iv in intervals]], dtype=float)
    a = assess(n, mean, sd, design)
    return [a.at(0, i) for i in range(len(intervals))]


# ---------------------------------------------------------------- the wording


def points(x: float) -> str:
    return stats.points(x)


def outcome_label(outcome: str, mean: float) -> str:
    """'A' / 'B' (which level wins), 'equivalent' or 'open': what analysis.compare lines up."""
    if outcome == BETTER:
        return "A" if mean >= 0 else "B"
    return outcome


def verdict(
    knob: str, level_a: str, level_b: str, iv: stats.Interval, row: Mapping[str, Any], metric: str, design: Design
) -> str:
    """One line: who wins (better), that no difference larger than the resolution is there (equivalent),
    or that the answer is open, with what these seeds can see (the minimum detectable difference)."""
    if iv.n < 2:
        return f"{knob}: {level_a} vs {level_b}: too few seed-paired runs to compare (n={iv.n}): open"
    p_holm = row["p_adjusted"]
    looks = f" over {design.looks} looks" if design.looks > 1 else ""
    mdd_text = f"smallest difference {iv.n} seeds detect (power {POWER:g}): {points(row['mdd'])} points"
    if row["outcome"] == BETTER:
        win, lose, lo, hi, d = stats.oriented(level_a, level_b, iv)
        return (
            f"{knob}: {win} beats {lose} by {points(d)} points of {metric}, "
            f"95 % CI {points(lo)} to {points(hi)} (n={iv.n} seed pairs, Holm p={p_holm:.2g}{looks}; {mdd_text})"
        )
    where = (
        f"{level_a} - {level_b} = {points(iv.mean)} points, 95 % CI {points(iv.ci_low)} to {points(iv.ci_high)}, "
        f"n={iv.n} seed pairs, Holm p={p_holm:.2g}{looks}"
    )
    within = f"within +-{points(row['bound'])} points (TOST at {row['level']:.2g})"
    if row["outcome"] == EQUIVALENT:
        return (
            f"{knob}: {level_a} vs {level_b}: no difference larger than {points(design.resolution)} points in "
            f"{metric}: {within} ({where})"
        )
    caveat = "; the unadjusted CI excludes 0, the corrected test does not" if iv.excludes_zero else ""
    return (
        f"{knob}: {level_a} vs {level_b}: open: no difference detected in {metric} ({where}{caveat}); the data "
        f"support only {within}, not the {points(design.resolution)}-point resolution; {mdd_text}"
    )


def row_fields(row: Mapping[str, Any], design: Design) -> dict[str, Any]:
    """The summary.parquet columns a comparison fills beyond the interval: p_holm, alpha, looks, mdd,
    equivalence_bound, resolution, outcome (NaN written as null)."""

    def null(x: float) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    return {
        "p_holm": null(row["p_adjusted"]),
        "alpha": null(row["level"]),
        "looks": design.looks,
        "mdd": null(row["mdd"]),
        "equivalence_bound": null(row["bound"]),
        "resolution": design.resolution,
        "outcome": row["outcome"],
    }


# ---------------------------------------------------------------- the racing rules (one round)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two levels of one knob over the grid: the cell pairs (i, j) that differ in that knob alone,
    difference = cell i - cell j."""

    knob: str
    level_a: Any
    level_b: Any
    pairs: tuple[tuple[int, int], ...]


def grid_comparisons(cells: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """Every two levels of a knob that some two cells differ in alone (knobs one cell sets and the other
    does not are nested in the level, as analysis.knobs pairs them), levels in the report's order."""
    found: dict[tuple[str, str, str], tuple[Any, Any, list[tuple[int, int]]]] = {}
    for i, j in itertools.combinations(range(len(cells)), 2):
        a, b = cells[i], cells[j]
        differ = [k for k in a.keys() & b.keys() if a[k] != b[k] and k != "seed"]
        if len(differ) != 1:
            continue
        (knob,) = differ
        ta, tb = _text(a[knob]), _text(b[knob])
        if (ta, _key(a[knob])) > (tb, _key(b[knob])):
            i, j, a, b, ta, tb = j, i, b, a, tb, ta
        entry = found.setdefault((knob, ta, tb), (a[knob], b[knob], []))
        entry[2].append((i, j))
    return [Comparison(k, va, vb, tuple(pairs)) for (k, _, _), (va, vb, pairs) in sorted(found.items())]


def _text(value: Any) -> str:
    return level_text(value)


def _key(value: Any) -> str:
    return repr(value)


def grid_differences(values: np.ndarray, n: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
    """Per-seed differences of each comparison, (races, comparisons, pairs x seeds), NaN where a seed is
    missing from either cell. values: (races, cells, seeds), NaN for a run without a value; n: seeds
    each cell has had, (races, cells): the first n seeds."""
    values = np.asarray(values, dtype=float)
    races, _, seeds = values.shape
    width = max([len(c.pairs) for c in comparisons] + [1]) * seeds
    out = np.full((races, len(comparisons), width), np.nan)
    seed_index = np.arange(seeds)
    for g, comp in enumerate(comparisons):
        for k, (i, j) in enumerate(comp.pairs):
            common = np.minimum(n[:, i], n[:, j])[:, None]
            d = values[:, i, :] - values[:, j, :]
            out[:, g, k * seeds : (k + 1) * seeds] = np.where(seed_index[None, :] < common, d, np.nan)
    return out


def grid_round(
    values: np.ndarray, n: np.ndarray, comparisons: Sequence[Comparison], design: Design, with_mdd: bool = False
) -> tuple[Assessment, np.ndarray]:
    """One look of a grid race: every comparison assessed (one family), and which cells get another seed
    (races, cells): those in an open comparison that have fewer than max_repeats seeds."""
    assert design.max_repeats is not None
    a = assess(*summarize(grid_differences(values, n, comparisons)), design, with_mdd=with_mdd)
    extend = np.zeros(n.shape, dtype=bool)
    for g, comp in enumerate(comparisons):
        is_open = a.outcome[:, g] == OPEN
        for i, j in comp.pairs:
            extend[:, i] |= is_open
            extend[:, j] |= is_open
    return a, extend & (n < design.max_repeats)


def confirm_round(
    values: np.ndarray, n: np.ndarray, alive: np.ndarray, design: Design, with_mdd: bool = False
) -> tuple[Assessment, np.ndarray, np.ndarray, np.ndarray]:
    """One look of a race among configurations. values: (races, configs, seeds); n: seeds each config
    has had; alive: (races, configs) still racing. The leader is the alive config with the highest mean;
    every pair of configs is one family (the leader is chosen from the data, so any pair may be the one
    compared). Returns (the assessment of each config against the leader, leader - config, (races,
    configs); the leader index (races,); alive after this look; whether the race goes on (races,)):
    a config the leader significantly beats is dropped; the race ends when one is left, none is open
    against the leader, or the alive ones have max_repeats seeds."""
    assert design.max_repeats is not None
    values = np.asarray(values, dtype=float)
    races, k, seeds = values.shape
    seed_index = np.arange(seeds)
    have = seed_index[None, None, :] < n[:, :, None]
    with np.errstate(invalid="ignore"):
        means = np.nanmean(np.where(have, values, np.nan), axis=2)
    leader = np.argmax(np.where(alive & np.isfinite(means), means, -np.inf), axis=1)
    pairs = list(itertools.combinations(range(k), 2))
    diffs = np.full((races, len(pairs), seeds), np.nan)
    for g, (i, j) in enumerate(pairs):
        common = np.minimum(n[:, i], n[:, j])[:, None]
        diffs[:, g, :] = np.where(seed_index[None, :] < common, values[:, i, :] - values[:, j, :], np.nan)
    a = assess(*summarize(diffs), design, family=len(pairs), with_mdd=with_mdd)
    # Against the leader: pair (i, j) holds i - j; leader - c is + for i = leader, - for j = leader.
    vs = {f: np.full((races, k), np.nan) for f in ("n", "mean", "sd", "se", "p", "p_adjusted", "level", "bound", "mdd")}
    outcome = np.full((races, k), OPEN, dtype=object)
    rows = np.arange(races)
    for g, (i, j) in enumerate(pairs):
        for lead, other, sign in ((i, j, 1.0), (j, i, -1.0)):
            hit = leader == lead
            for f in vs:
                value = getattr(a, f)[:, g]
                vs[f][hit, other] = (sign * value if f == "mean" else value)[hit]
            outcome[hit, other] = a.outcome[hit, g]
    outcome[rows, leader] = OPEN
    against = Assessment(
        n=vs["n"].astype(float),
        mean=vs["mean"],
        sd=vs["sd"],
        se=vs["se"],
        p=vs["p"],
        p_adjusted=vs["p_adjusted"],
        level=vs["level"],
        bound=vs["bound"],
        mdd=vs["mdd"],
        outcome=outcome.astype(str),
    )
    beaten = alive & (against.outcome == BETTER) & (against.mean > 0)
    beaten[rows, leader] = False
    still = alive & ~beaten
    others = still.copy()
    others[rows, leader] = False
    undecided = (others & (against.outcome == OPEN)).any(axis=1)
    full = (np.where(still, n, design.max_repeats) >= design.max_repeats).all(axis=1)
    goes_on = (still.sum(axis=1) > 1) & undecided & ~full
    return against, leader, still, goes_on
