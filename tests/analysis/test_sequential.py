"""analysis.sequential: the minimum detectable difference against a hand computation, the three outcomes,
and the racing rules' error rates and seeds by simulation (vectorised: thousands of races in a second).

The figures the simulations measure (seeded; 3 to 10 seeds, so 8 looks; alpha 0.05), also stated in
analysis/README.md:

- no true difference, 3 cells (3 comparisons), 4,000 grid races: a false `better` verdict in 0.63 % of
  races; 3 configurations, 4,000 confirm races: a configuration wrongly dropped in 2.8 %;
- two cells exactly 1 point apart with a resolution of 1 point: a false `equivalent` in 1.0 % of races;
- a difference of 2 sd of the per-seed difference, two cells: found in 99.0 % of races, with 5.78 seeds
  per cell on average, where a fixed design of that power (alpha 0.05, one look) needs 7;
- a difference of 1 sd: found in 49 % with 8.6 seeds, where a fixed design of that power needs 6
  (the union bound's price where an answer is marginal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import sequential, stats

DESIGN = sequential.race_design(3, 10, 1.0)  # the defaults: 8 looks, 1 point


def grid_race(
    effects: list[float], sd: float, design: sequential.Design, races: int, seed: int
) -> tuple[sequential.Assessment, np.ndarray]:
    """`races` grid races of one knob with len(effects) levels: each run is its level's effect plus
    independent noise of sd `sd`. Returns the last look's assessment and the seeds each cell got."""
    rng = np.random.default_rng(seed)
    cells = [{"knob": f"level{i}"} for i in range(len(effects))]
    comparisons = sequential.grid_comparisons(cells)
    assert len(comparisons) == len(effects) * (len(effects) - 1) // 2
    values = np.asarray(effects)[None, :, None] + rng.normal(0, sd, (races, len(effects), design.max_repeats))
    n = np.full((races, len(effects)), design.min_repeats)
    for _ in range(design.looks):
        a, extend = sequential.grid_round(values, n, comparisons, design)
        if not extend.any():
            break
        n = n + extend
    return a, n


def fixed_design_seeds(difference: float, sd: float, power: float, level: float = 0.05) -> int:
    """Seeds per cell a fixed design (one look) needs for `power` against `difference`."""
    return next(n for n in range(2, 500) if sequential.power(n, difference, sd, level) >= power)


# ---------------------------------------------------------------- minimum detectable difference


def test_the_minimum_detectable_difference_matches_the_hand_computation() -> None:
    """By hand: a two-sided paired t-test over n = 10 pairs at alpha 0.05 has power 0.803 against a true
    difference of one standard deviation (the textbook value: noncentral t, 9 df, ncp sqrt(10)), so the
    difference found with power 0.8 is just under one sd. The usual approximation (t(0.975, 9) + t(0.8, 9))
    / sqrt(10) = (2.262 + 0.883) / 3.162 = 0.9947 sd agrees to a few parts in a thousand."""
    crit = sps.t.ppf(0.975, 9)
    assert sps.nct.sf(crit, 9, math.sqrt(10)) + sps.nct.cdf(-crit, 9, math.sqrt(10)) == pytest.approx(0.8031, abs=1e-4)
    sd = 0.02  # 2 points
    mdd = float(sequential.mdd(10, sd, 0.05))
    assert 0.98 * sd < mdd < sd
    assert mdd == pytest.approx((2.2622 + 0.8834) / math.sqrt(10) * sd, rel=3e-3)
    assert sequential.power(10, mdd, sd, 0.05) == pytest.approx(0.8, abs=1e-6)
    # And by simulation: 20,000 paired t-tests of 10 pairs with that true difference reject 80 % of the time.
    rng = np.random.default_rng(0)
    x = rng.normal(mdd, sd, (20_000, 10))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(10))
    assert (np.abs(t) > crit).mean() == pytest.approx(0.8, abs=0.01)
    # Fewer seeds, a stricter level: a larger MDD; no spread: 0; one pair: none.
    assert sequential.mdd(3, sd, 0.05) > sequential.mdd(5, sd, 0.05) > mdd
    assert sequential.mdd(10, sd, 0.05 / 24) > mdd
    assert float(sequential.mdd(4, 0.0, 0.05)) == 0.0 and math.isnan(float(sequential.mdd(1, sd, 0.05)))


def test_holm_on_arrays_matches_the_scalar_procedure() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, (50, 4))
    p[::7, 1] = np.nan
    out = sequential.holm(p)
    for row, adjusted in zip(p, out, strict=True):
        assert adjusted == pytest.approx(stats.holm(row.tolist()), nan_ok=True)


# ---------------------------------------------------------------- the three outcomes


def test_three_outcomes_better_equivalent_open() -> None:
    design = sequential.Design(resolution=0.01)
    a = sequential.assess_differences(
        [
            np.array([0.05, 0.052, 0.049, 0.051]),  # clearly better
            np.array([0.001, -0.001, 0.0, 0.0005, -0.0005]),  # inside +-1 point
            np.array([0.03, -0.04, 0.05, -0.02]),  # noisy: neither
            np.array([0.02]),  # one pair: nothing to test
        ],
        design,
    )
    assert list(a.outcome[0]) == ["better", "equivalent", "open", "open"]
    # TOST by hand for the second: |mean| + t(1 - alpha/3, 4) * sd / sqrt(5).
    x = np.array([0.001, -0.001, 0.0, 0.0005, -0.0005])
    level = 0.05 / 3
    assert a.level[0, 1] == pytest.approx(level)
    bound = abs(x.mean()) + sps.t.ppf(1 - level, 4) * x.std(ddof=1) / math.sqrt(5)
    assert a.bound[0, 1] == pytest.approx(bound)
    # The adjusted p-values are Holm's (three comparisons with data); a race multiplies them by its looks.
    raced = sequential.assess_differences([np.array([0.05, 0.052, 0.049, 0.051])], sequential.Design(looks=8))
    single = sequential.assess_differences([np.array([0.05, 0.052, 0.049, 0.051])], sequential.Design())
    assert raced.p_adjusted[0, 0] == pytest.approx(8 * single.p_adjusted[0, 0])


def test_a_race_design_is_checked_and_read_back_from_experiment_json() -> None:
    assert (DESIGN.looks, DESIGN.resolution, DESIGN.min_repeats, DESIGN.max_repeats) == (8, 0.01, 3, 10)
    with pytest.raises(ValueError, match="--min-repeats"):
        sequential.race_design(1, 4, None)
    with pytest.raises(ValueError, match="--max-repeats 2 is below --min-repeats 3"):
        sequential.race_design(3, 2, None)
    with pytest.raises(ValueError, match="--resolution"):
        sequential.race_design(3, 4, 0.0)
    meta = {"args": {"repeats": "auto", "min_repeats": None, "max_repeats": 4, "resolution": 0.5}}
    assert sequential.design_from_meta(meta) == sequential.Design(
        looks=2, resolution=0.005, min_repeats=3, max_repeats=4
    )
    assert sequential.design_from_meta({"args": {"repeats": 3}}) == sequential.Design()
    assert sequential.design_from_meta({}) == sequential.Design()


# ---------------------------------------------------------------- the racing rules by simulation


def test_with_no_true_difference_false_better_verdicts_stay_below_alpha() -> None:
    """4,000 grid races of 3 equal cells (3 comparisons, 8 looks): the share of races with any false
    `better` verdict is 0.63 %, below alpha 5 % (Bonferroni over looks is conservative). And 4,000
    confirm races of 3 equal configurations: a configuration is wrongly dropped in 2.8 % of races."""
    a, n = grid_race([0.0, 0.0, 0.0], sd=0.02, design=DESIGN, races=4000, seed=1)
    false_better = (a.outcome == sequential.BETTER).any(axis=1).mean()
    assert false_better <= sequential.ALPHA
    assert false_better == pytest.approx(0.0063, abs=0.004)
    assert (n <= DESIGN.max_repeats).all() and (n >= DESIGN.min_repeats).all()

    rng = np.random.default_rng(2)
    races, k = 4000, 3
    values = rng.normal(0, 0.02, (races, k, DESIGN.max_repeats))
    n = np.full((races, k), DESIGN.min_repeats)
    alive = np.ones((races, k), dtype=bool)
    dropped = np.zeros(races, dtype=bool)
    going = np.ones(races, dtype=bool)
    for _ in range(DESIGN.looks):
        _, _, still, goes_on = sequential.confirm_round(values, n, alive, DESIGN)
        still = np.where(going[:, None], still, alive)  # a finished race decides nothing more
        dropped |= (alive & ~still).any(axis=1)
        alive, going = still, going & goes_on
        n = np.where(alive & going[:, None], n + 1, n)
        if not going.any():
            break
    assert dropped.mean() <= sequential.ALPHA
    assert dropped.mean() == pytest.approx(0.028, abs=0.01)


def test_a_difference_of_exactly_the_resolution_is_not_called_equivalent() -> None:
    """Two cells 1 point apart, resolution 1 point, small noise: TOST must not call them equivalent more
    often than alpha (it does in 1.0 % of 4,000 races; 95 % end `better`)."""
    a, _ = grid_race([0.0, 0.01], sd=0.004, design=DESIGN, races=4000, seed=4)
    assert (a.outcome == sequential.EQUIVALENT).mean() <= sequential.ALPHA
    assert (a.outcome == sequential.EQUIVALENT).mean() == pytest.approx(0.01, abs=0.005)


def test_a_known_difference_is_found_with_fewer_seeds_than_a_fixed_design_of_the_same_power() -> None:
    """Two cells whose difference is 2 sd of the per-seed difference: the race finds it in 99.0 % of
    4,000 races with 5.78 seeds per cell on average; a fixed design needs 7 seeds per cell for that power.
    At 1 sd the race needs more seeds than the fixed design (8.6 against 6 for its 49 % power): racing
    pays where the answer is clear."""
    run_sd = 0.02
    diff_sd = run_sd * math.sqrt(2)  # two independent runs per seed pair
    a, n = grid_race([0.0, 2 * diff_sd], sd=run_sd, design=DESIGN, races=4000, seed=5)
    found = (a.outcome[:, 0] == sequential.BETTER).mean()
    seeds = n.mean()
    fixed = fixed_design_seeds(2 * diff_sd, diff_sd, found)
    assert found >= 0.95 and found == pytest.approx(0.99, abs=0.01)
    assert seeds == pytest.approx(5.78, abs=0.15) and fixed == 7
    assert seeds < fixed
    # Every cell stopped as soon as its comparison was settled, not at the maximum.
    assert (n[a.outcome[:, 0] == sequential.BETTER] < DESIGN.max_repeats).mean() > 0.9

    a1, n1 = grid_race([0.0, diff_sd], sd=run_sd, design=DESIGN, races=4000, seed=6)
    found1 = (a1.outcome[:, 0] == sequential.BETTER).mean()
    assert found1 == pytest.approx(0.49, abs=0.03)
    assert n1.mean() > fixed_design_seeds(diff_sd, diff_sd, found1)


def test_a_grid_race_gives_seeds_only_to_cells_in_open_comparisons() -> None:
    """Three cells: a and b equal on every seed (settled equivalent at the first look), c noisy against
    both: a and b keep getting seeds only because each is in an open comparison with c. Then a fourth cell
    d, compared with no one open, stops at the minimum."""
    cells = [{"bn": "a", "x": 1}, {"bn": "b", "x": 1}, {"bn": "c", "x": 1}, {"bn": "a", "x": 2}]
    comparisons = sequential.grid_comparisons(cells)
    assert [(c.knob, c.level_a, c.level_b, c.pairs) for c in comparisons] == [
        ("bn", "a", "b", ((0, 1),)),
        ("bn", "a", "c", ((0, 2),)),
        ("bn", "b", "c", ((1, 2),)),
        ("x", 1, 2, ((0, 3),)),
    ]
    rng = np.random.default_rng(7)
    values = np.zeros((1, 4, 10))
    values[0, 2] = rng.normal(0, 0.1, 10)  # c: noisy
    values[0, 3] = 0.5  # d: far better than a on every seed: settled at once
    n = np.full((1, 4), 3)
    a, extend = sequential.grid_round(values, n, comparisons, DESIGN)
    assert list(a.outcome[0]) == ["equivalent", "open", "open", "better"]
    assert extend[0].tolist() == [True, True, True, False]
