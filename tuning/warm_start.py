"""--warm-start EXP: an earlier experiment's best configurations as the first trials of a new search.

Each configuration is queued in the new study with Optuna's own `enqueue_trial`, so the searcher asks
them first and then learns from their results as from any trial; the queued trial carries where it came
from (`origin`, EXP/trial_id) as a user attribute, which the searcher hands to the trial's config and the
tables keep (the `warm_start` column).

A configuration is taken from EXP's trials table: the knobs its best trials read (a knob a trial did not
read is null there). It is replayed through the new space's define-by-run before anything starts, so a
knob the new space searches that EXP's trial did not have, a value outside the new space's range, or a
knob the new space fixes to another value is refused, naming it (ValueError; the driver makes it a usage
error). Knobs EXP's trial read that the new space neither searches nor fixes are left out: they were
defaults or the new space's own choice. Imports Optuna and pandas, never Ray or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import optuna
import pandas as pd

from analysis import summary
from search_spaces.base import SearchSpace
from trainables.config import WARM_START, knob_types

ORIGIN = WARM_START  # the config key (not a knob) naming where a warm-started trial's configuration came from
# Knobs the driver fixes for every trial (flags, the dataset, the budget): never taken from EXP.
RUN_KNOBS = frozenset({"dataset", "seed", "max_epochs", "patience", "weights", "input_size"})


@dataclasses.dataclass(frozen=True)
class WarmPoint:
    """One queued trial: the new space's Optuna parameters, and where they came from."""

    params: dict[str, Any]
    origin: str  # "<experiment>/<trial id>"


def best_rows(trials: pd.DataFrame, top: int) -> list[dict[str, Any]]:
    """The `top` best search trials of distinct configurations, best first (analysis.summary.ranking:
    the largest budget first, then best validation accuracy)."""
    ranked = summary.ranking(trials[trials["phase"] == "search"])
    names = [k for k in knob_types() if k in ranked and k not in RUN_KNOBS]
    rows: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    for row in ranked.to_dict("records"):
        knobs = known_knobs(row, names)
        if knobs not in seen:
            seen.append(knobs)
            rows.append(row)
    return rows[:top]


def known_knobs(row: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The knobs a table row holds a value for, as plain Python values of the knob's type (Optuna stores
    them as JSON): an integer column with nulls reads back as floats, e.g. warmup_epochs 3.0."""
    types = knob_types()
    out = {}
    for name in names:
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            continue
        value = value.item() if hasattr(value, "item") else value
        if types.get(name) is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[name] = value
    return out


def contains(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether an Optuna distribution holds `value` (a categorical one by equality, a numeric one by its
    bounds and, for an integer one, its step)."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return (
            isinstance(value, int)
            and distribution.low <= value <= distribution.high
            and (value - distribution.low) % distribution.step == 0
        )
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return isinstance(value, int | float) and distribution.low <= value <= distribution.high
    return False


def describe(distribution: optuna.distributions.BaseDistribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(map(repr, distribution.choices))
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    return f"{low}..{high}"


def as_point(space: SearchSpace, knobs: Mapping[str, Any], origin: str) -> WarmPoint:
    """`knobs` (an earlier trial's) as a point of `space`: replayed through its define-by-run on a throwaway
    study, so conditional knobs are asked exactly when the space would ask them. ValueError names a knob
    the space asks for that the trial lacks, a value outside the space, or a fixed knob that differs."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a throwaway study: no "study created" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.enqueue_trial(dict(knobs))
        trial = study.ask()
        fixed = space.define(trial) or {}
    finally:
        optuna.logging.set_verbosity(verbosity)
    for name, distribution in trial.distributions.items():
        if name not in knobs:
            raise ValueError(
                f"--warm-start: space {space.name!r} searches knob {name!r}, which {origin} did not have "
                "(its space did not search it, or its model did not read it); warm-start from an "
                "experiment whose trials set it"
            )
        if not contains(distribution, knobs[name]):
            raise ValueError(
                f"--warm-start: {origin} has {name}={knobs[name]!r}, outside space {space.name!r} "
                f"({name} is {describe(distribution)}); lower --warm-start-top or warm-start from another experiment"
            )
    for name, value in fixed.items():
        if name in knobs and knobs[name] != value:
            raise ValueError(
                f"--warm-start: {origin} has {name}={knobs[name]!r}, but space {space.name!r} fixes "
                f"{name}={value!r}; warm-start from an experiment of a space with the same {name}"
            )
    return WarmPoint({name: knobs[name] for name in trial.params}, origin)


def warm_points(space: SearchSpace, experiments: Mapping[str, pd.DataFrame], top: int) -> list[WarmPoint]:
    """The points a new search on `space` queues first: the `top` best of each experiment's trials table
    (experiment name -> trials), in the order given, a configuration met twice queued once."""
    points: list[WarmPoint] = []
    for name, trials in experiments.items():
        rows = best_rows(trials, top)
        if not rows:
            raise ValueError(f"--warm-start {name}: no search trial of it finished without error")
        names = [k for k in knob_types() if k in trials and k not in RUN_KNOBS]
        for row in rows:
            point = as_point(space, known_knobs(row, names), f"{name}/{row['trial_id']}")
            if all(p.params != point.params for p in points):
                points.append(point)
    return points
