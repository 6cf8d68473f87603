"""Does the search beat the reference? The best confirmed configuration of an experiment against the
best reference cell of the same model, paired by seed.

The tuned side is the `confirm` phase (`--confirm-top K --repeats R`: the K best configurations of the
search retrained R times with seeds the search never used); its best configuration is the one with the
highest mean test accuracy over its seeds. The reference side is the cell of the same model with the
highest mean test accuracy among the completed full-budget runs of the reference experiments (e.g. the
`reference` grid with `--repeats`). Runs that share a seed share the validation split and the
initialisation seed, so the difference is paired by seed: mean, 95 % t-interval and paired t-test over
the seeds both sides ran. `python -m analysis EXP --against REFERENCE_EXP` puts it in the report's
first lines and in `report/against.parquet`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from analysis import stats
from analysis.knobs import level_text, varying_knobs
from analysis.summary import config_ids

NOT_SHOWN = ("seed", "max_epochs", "patience", "dataset")  # the same on both sides, or run settings


@dataclasses.dataclass(frozen=True)
class Side:
    """One configuration's full-budget runs: its label, test accuracy per seed and their interval."""

    model: str
    label: str
    by_seed: pd.Series  # seed -> test accuracy (mean over runs of that seed, normally one)
    interval: stats.Interval


@dataclasses.dataclass(frozen=True)
class Comparison:
    model: str
    tuned: Side
    reference: Side | None
    seeds: tuple[int, ...]  # the seeds both sides ran
    difference: stats.Interval | None  # tuned - reference, paired by seed

    def lines(self) -> list[str]:
        """The report's first lines: the best confirmed configuration, then how it fares."""
        t = self.tuned
        out = [
            f"**Best confirmed configuration** ({self.model}): {t.label}: mean test accuracy "
            f"{t.interval.mean:.4f} over {t.interval.n} seeds ({_ci(t.interval)})."
        ]
        if self.reference is None:
            return out
        r, d = self.reference, self.difference
        out.append(
            f"**Against the best reference {self.model} cell** ({r.label}: {r.interval.mean:.4f} over "
            f"{r.interval.n} seeds, {_ci(r.interval)}): " + _difference_text(d, self.seeds)
        )
        return out

    def row(self) -> dict[str, object]:
        """One row of report/against.parquet (and of benchmarks/results/tuned_vs_reference.csv)."""
        t, r, d = self.tuned, self.reference, self.difference
        return {
            "model": self.model,
            "tuned_config": t.label,
            "tuned_seeds": " ".join(map(str, t.by_seed.index)),
            "tuned_test_accuracy": t.interval.mean,
            "tuned_ci_low": t.interval.ci_low,
            "tuned_ci_high": t.interval.ci_high,
            "reference_cell": None if r is None else r.label,
            "reference_seeds": None if r is None else " ".join(map(str, r.by_seed.index)),
            "reference_test_accuracy": None if r is None else r.interval.mean,
            "reference_ci_low": None if r is None else r.interval.ci_low,
            "reference_ci_high": None if r is None else r.interval.ci_high,
            "paired_seeds": " ".join(map(str, self.seeds)),
            "difference": None if d is None else d.mean,
            "diff_ci_low": None if d is None else d.ci_low,
            "diff_ci_high": None if d is None else d.ci_high,
            "p_value": None if d is None else d.p_value,
        }


def _ci(iv: stats.Interval) -> str:
    if iv.n < 2:
        return "one seed, no interval"
    return f"95 % CI {iv.ci_low:.4f} to {iv.ci_high:.4f}"


def _difference_text(d: stats.Interval | None, seeds: Sequence[int]) -> str:
    if d is None or d.n == 0:
        return "no seed in common, so no paired difference; run the reference cell at the confirm seeds."
    seeds_text = f"seeds {', '.join(map(str, seeds))}"
    if d.n < 2:
        return f"{stats.points(d.mean)} points on the one common seed ({seeds_text}); no interval."
    if d.excludes_zero:
        word = "beats it by" if d.mean > 0 else "falls short of it by"
        return (
            f"the tuned configuration {word} {stats.points(abs(d.mean))} points, paired 95 % CI "
            f"{stats.points(d.ci_low)} to {stats.points(d.ci_high)} (n={d.n} {seeds_text}, p={d.p_value:.2g})."
        )
    return (
        f"no difference detected: {stats.points(d.mean)} points, paired 95 % CI {stats.points(d.ci_low)} "
        f"to {stats.points(d.ci_high)} (n={d.n} {seeds_text}, p={d.p_value:.2g})."
    )


def full_budget(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with a test accuracy: those that reached the full budget."""
    return trials[(trials["status"] == "completed") & trials["test_accuracy"].notna()]


def best_side(runs: pd.DataFrame, knobs: Sequence[str]) -> Side:
    """The configuration of `runs` with the highest mean test accuracy, labelled by `knobs` (its
    non-null values)."""
    runs = runs.assign(_cid=config_ids(runs).to_numpy())
    means = runs.groupby("_cid")["test_accuracy"].mean()
    best = runs[runs["_cid"] == means.idxmax()]
    first = best.iloc[0]
    shown = [k for k in knobs if k in best and not pd.isna(first[k])]
    label = ", ".join(f"{k}={level_text(first[k])}" for k in shown) or str(first.get("model", "?"))
    by_seed = best.groupby("seed")["test_accuracy"].mean().sort_index()
    by_seed.index = by_seed.index.astype(int)
    return Side(str(first["model"]), label, by_seed, stats.t_interval(by_seed.to_numpy(), stats.ACCURACY))


def compare(tuned: pd.DataFrame, reference: pd.DataFrame | None = None) -> Comparison | None:
    """The best confirmed configuration of `tuned` (an experiment's trials table) against the best
    reference cell of its model in `reference` (trials of one or more reference experiments); None
    when `tuned` has no full-budget confirm run."""
    confirm = full_budget(tuned[tuned["phase"] == "confirm"])
    if confirm.empty:
        return None
    search = tuned[tuned["phase"] == "search"]
    searched = [k for k in varying_knobs(search if len(search) else confirm) if k not in NOT_SHOWN]
    side = best_side(confirm, searched or ["model"])
    model = side.model
    if reference is None:
        return Comparison(model, side, None, (), None)
    cells = full_budget(reference[reference["model"] == model])
    if cells.empty:
        return Comparison(model, side, None, (), None)
    ref = best_side(cells, [k for k in varying_knobs(cells) if k not in NOT_SHOWN] or ["model"])
    seeds = tuple(sorted(set(side.by_seed.index) & set(ref.by_seed.index)))
    diff = side.by_seed[list(seeds)].to_numpy() - ref.by_seed[list(seeds)].to_numpy()
    return Comparison(model, side, ref, seeds, stats.t_interval(diff, stats.DIFFERENCE))
