"""Knobs in the result tables, and the selections every answer shares: repeated runs, matched budget,
seed-paired differences. Nulls mean "this trial did not read the knob" and are never a level.

Imported by summary, importance and questions; imports none of them (no cycle).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.tables import knob_columns
from trainables.registry import is_null

# Knobs with more distinct values than this are continuous: plotted, not split into levels.
MAX_LEVELS = 8
# A matched budget is the deepest epoch at least this many search trials reached.
MIN_TRIALS_AT_BUDGET = 8
NOT_KNOBS = ("seed",)  # varies between repeats on purpose; it is what pairs runs, not a knob to tune


def knob_names() -> list[str]:
    return [name for name, _, _ in knob_columns()]


def varying_knobs(trials: pd.DataFrame) -> list[str]:
    """Knobs (TrialConfig fields, seed excepted) with more than one non-null value among these trials."""
    return [k for k in knob_names() if k in trials and k not in NOT_KNOBS and trials[k].nunique(dropna=True) > 1]


def is_discrete(values: pd.Series) -> bool:
    """A knob with a few levels (strings, bools, small ints, or floats that repeat, as on a grid),
    rather than a continuous one sampled afresh per trial."""
    distinct = values.nunique(dropna=True)
    if not 2 <= distinct <= MAX_LEVELS:
        return False
    if pd.api.types.is_float_dtype(values):
        return bool(distinct * 2 <= values.notna().sum())
    return True


def level_text(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.3g}"
    return str(value)


def plain(value: Any) -> Any:
    """A table cell as a plain Python value (numpy scalars unwrapped), None for a null knob."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if is_null(value) else value


def finite(x: Any) -> bool:
    return x is not None and not pd.isna(x) and math.isfinite(float(x))


def repeated_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished full-budget runs for per-configuration statistics: confirm phase if it has any, else search."""
    done = trials[(trials["status"] == "completed") & (trials["epochs_completed"] >= trials["max_epochs"])]
    confirm = done[done["phase"] == "confirm"]
    return (confirm if len(confirm) else done).copy()


def nested_knobs(rep: pd.DataFrame, knob: str, level_a: Any, level_b: Any) -> list[str]:
    """Knobs read at one of the two levels and not at the other (`zoom_range` under augmentation
    `complex` but not `simple`; `depth` under the ConvNet but not BaseNet): part of what the level means,
    so they are not held equal when the two levels are paired."""
    a, b = rep[rep[knob] == level_a], rep[rep[knob] == level_b]
    return [
        k
        for k in knob_names()
        if k in rep and k != knob and len(a) and len(b) and a[k].isna().all() != b[k].isna().all()
    ]


def merge_key(column: pd.Series) -> np.ndarray:
    """Each value as its JSON text (null as "null"), a key that merges equal values and nulls alike; JSON
    is written once per distinct value (pd.factorize), not per row: 8.5 M rows at 10,000 trials."""
    codes, uniques = pd.factorize(column, use_na_sentinel=False)
    texts = np.array([json.dumps(plain(v), default=str) for v in uniques], dtype=object)
    return texts[codes]


def paired_differences(rep: pd.DataFrame, knob: str, level_a: Any, level_b: Any, metric: str) -> np.ndarray:
    """metric(knob=a) - metric(knob=b) for runs that share the seed and every other knob (knobs read by
    only one of the two levels excepted: see nested_knobs)."""
    nested = set(nested_knobs(rep, knob, level_a, level_b))
    others = [k for k in knob_names() if k in rep and k != knob and k not in nested]
    sub = rep[rep[knob].isin([level_a, level_b]) & rep[metric].notna()]
    if sub.empty:
        return np.array([])
    keyed = sub[others + [knob, metric]].copy()
    for k in others:  # NaN never equals NaN in a merge key; a knob not read (null) is held equal as null
        keyed[k] = merge_key(keyed[k])
    mean = keyed.groupby(others + [knob], dropna=False)[metric].mean().reset_index()  # duplicate runs averaged
    a = mean[mean[knob] == level_a].drop(columns=knob)
    b = mean[mean[knob] == level_b].drop(columns=knob)
    joined = a.merge(b, on=others, suffixes=("_a", "_b"))
    return (joined[f"{metric}_a"] - joined[f"{metric}_b"]).to_numpy(dtype=float)


def search_trials(trials: pd.DataFrame) -> pd.DataFrame:
    search = trials[trials["phase"] == "search"]
    return search if len(search) else trials


def matched_budget(
    trials: pd.DataFrame, epochs: pd.DataFrame, min_trials: int = MIN_TRIALS_AT_BUDGET
) -> tuple[int | None, pd.Series]:
    """(budget, best validation accuracy by that epoch per trial_id) at the deepest epoch that at least
    `min_trials` trials reached (or, with fewer trials than that, that all of them reached)."""
    ep = epochs[epochs["trial_id"].isin(trials["trial_id"]) & epochs["val_accuracy"].notna()]
    ep = ep[np.isfinite(ep["val_accuracy"].astype(float))]
    if ep.empty:
        return None, pd.Series(dtype=float)
    reached = ep.groupby("trial_id")["epoch"].max()
    need = min(min_trials, len(reached))
    budget = max(e for e in sorted(ep["epoch"].unique()) if (reached >= e).sum() >= need)
    at = ep[ep["epoch"] <= budget]
    best = at.groupby("trial_id")["val_accuracy"].max()
    return int(budget), best[reached.reindex(best.index) >= budget]


def rank_by_value(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by `value`, highest first (null last), each given its 1-based `rank`."""
    rows.sort(key=lambda r: -(r["value"] if r["value"] is not None else -math.inf))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows
