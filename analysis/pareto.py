"""The Pareto front of a search with several objectives (run_search.py --objective val_accuracy,param_count).

A configuration is on the front when no other trial is at least as good on every objective and better
on one. Only search trials that reached the full budget without error compete: a trial ASHA stopped
early has a lower-fidelity accuracy (and Optuna recorded it PRUNED, without values), so it is neither
placed on the front nor allowed to dominate. The objectives are columns of trials.parquet named as the
flag names them, but `val_accuracy` is the trial's best epoch (`best_val_accuracy`: the one number per
trial that the searcher, ASHA and the report use; analysis/README.md). Where the
confirmation stage retrained a front configuration with new seeds, its test accuracy over those seeds
(mean and 95 % t-interval, analysis.stats) sits beside it.

Imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis import stats, summary
from analysis.knobs import varying_knobs

Objectives = list[tuple[str, str]]  # [(column, "min" | "max")], the first one is the primary


def objectives_from_meta(meta: Mapping[str, Any]) -> Objectives:
    """The experiment's --objective list from experiment.json ([] for an experiment recorded without one)."""
    return [(o["metric"], o["mode"]) for o in meta.get("objectives") or []]


def non_dominated(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Mask of the rows of `values` (points x objectives) no other row dominates. Equal points do not
    dominate each other, so ties all stay on the front."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    cost = np.asarray(values, dtype=float) * sign  # every objective minimised
    no_worse = (cost[:, None, :] >= cost[None, :, :]).all(axis=2)  # [i, j]: j is no worse than i anywhere
    better = (cost[:, None, :] > cost[None, :, :]).any(axis=2)  # [i, j]: j is better than i somewhere
    return ~(no_worse & better).any(axis=1)


def candidates(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Search trials that reached the full budget without error and have a value for every objective."""
    search = trials[trials["phase"] == "search"]
    full = search[(search["status"] == "completed") & (search["epochs_completed"] >= search["max_epochs"])]
    cols = [c for c, _ in objectives]
    if "val_accuracy" in cols and "best_val_accuracy" in full:
        full = full.assign(val_accuracy=full["best_val_accuracy"])  # the best epoch, as Optuna was told
    return full.dropna(subset=cols).reset_index(drop=True)


def pareto_front(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """The non-dominated full-budget search trials, best primary objective first, with their config and,
    where the confirmation stage repeated a config, its test accuracy over seeds (`confirm_*` columns)."""
    cols = [c for c, _ in objectives]
    pool = candidates(trials, objectives)
    front = pool[non_dominated(pool[cols].to_numpy(dtype=float), [m for _, m in objectives])].copy()
    first, mode = objectives[0]
    front = front.sort_values([first, "trial_id"], ascending=[mode == "min", True]).reset_index(drop=True)
    knobs = varying_knobs(trials[trials["phase"] == "search"])
    front["config_id"] = summary.config_ids(front).to_numpy() if len(front) else []
    front["config"] = summary.config_labels(front, knobs).to_numpy() if len(front) else []
    confirm = trials[(trials["phase"] == "confirm") & (trials["status"] == "completed")]
    confirm_ids = summary.config_ids(confirm) if len(confirm) else pd.Series([], dtype=str)
    rows = []
    for cid in front["config_id"]:
        f = stats.fields(stats.t_interval(confirm.loc[confirm_ids == cid, "test_accuracy"].dropna(), stats.ACCURACY))
        rows.append({f"confirm_{'mean' if k == 'value' else k}": v for k, v in f.items()})
    extra = pd.DataFrame(rows, columns=[f"confirm_{k}" for k in ("n", "mean", "std", "ci_low", "ci_high")])
    front = pd.concat([front.reset_index(drop=True), extra], axis=1)
    front.insert(0, "rank", range(1, len(front) + 1))
    keep = ["rank", "trial_id", "config_id", "config", *cols, "test_accuracy", *extra.columns]
    return front[[c for c in dict.fromkeys(keep) if c in front]]
