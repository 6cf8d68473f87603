"""Knob importance at matched budget with Optuna's fANOVA evaluator, on a study rebuilt from the table.

The study is in memory: one `optuna.trial.create_trial` per search trial that reached the matched
budget, valued by its best validation accuracy by that epoch, with distributions inferred from the
column: categorical for strings and bools, float for floats (log scale for learning_rate and
weight_decay when every value is positive), int for ints. Only knobs that vary take part.

A null is "this trial did not read the knob" (a BaseNet trial has no `depth`), never a level: a knob
that is null for some of the trials is left out of the fANOVA (which needs every knob in every trial)
and named in the note. Counting its nulls as a level would credit it with the effect of whatever
decides whether it is read (the model, the optimizer, the policy).

fANOVA's forest grows faster than linearly with the trials (26 of the 56 s of a 2,000-trial report,
profiled: benchmarks/README.md, issue 22), so above SAMPLE trials it runs on a seeded random sample of
SAMPLE of them, and the note says so.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis import knobs as knobs_

LOG_KNOBS = ("learning_rate", "weight_decay")
MIN_TRIALS = knobs_.MIN_TRIALS_AT_BUDGET  # fANOVA's random forest on fewer trials ranks noise
EVALUATOR = "fanova"
SAMPLE = 1000  # trials fANOVA runs on at most; a random sample (seeded: the report is reproducible) above
SAMPLE_SEED = 0


def distribution(values: pd.Series, knob: str) -> Any:
    import optuna.distributions as d

    if (
        pd.api.types.is_bool_dtype(values)
        or pd.api.types.is_object_dtype(values)
        or pd.api.types.is_string_dtype(values)
    ):
        return d.CategoricalDistribution(sorted({_py(v) for v in values}, key=str))
    if pd.api.types.is_integer_dtype(values):
        return d.IntDistribution(int(values.min()), int(values.max()))
    low, high = float(values.min()), float(values.max())
    return d.FloatDistribution(low, high, log=knob in LOG_KNOBS and low > 0)


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def param_importances(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[dict[str, float], int | None, int, str]:
    """(knob -> importance, budget in epochs, trials used, note). Empty dict with a note when skipped."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no 'study created' chatter in the report run
    search = knobs_.search_trials(trials)
    search = search[search["status"] != "error"]
    budget, score = knobs_.matched_budget(search, epochs)
    if budget is None:
        return {}, None, 0, "importance skipped: no trial reported a validation accuracy"
    at = search.set_index("trial_id").loc[score.index]
    varying = knobs_.varying_knobs(at)
    conditional = [k for k in varying if at[k].isna().any()]
    knobs = [k for k in varying if k not in conditional]
    n = len(at)
    if n < MIN_TRIALS:
        return (
            {},
            budget,
            n,
            (f"importance skipped: {n} search trials reached epoch {budget}, need at least {MIN_TRIALS}"),
        )
    skipped = f"; left out, as not read by every trial: {', '.join(conditional)}" if conditional else ""
    if not knobs:
        return {}, budget, n, f"importance skipped: no knob read by every trial varies{skipped}"
    sampled = ""
    if n > SAMPLE:
        at = at.sample(n=SAMPLE, random_state=SAMPLE_SEED)
        sampled = f" (a random sample of {SAMPLE} of them: fANOVA's cost grows faster than the trials)"
    dists = {k: distribution(at[k], k) for k in knobs}
    study = optuna.create_study(direction="maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={k: _py(row[k]) for k in knobs}, distributions=dists, value=float(score[tid])
            )
            for tid, row in at.iterrows()
        ]
    )
    result = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    note = (
        f"fANOVA (Optuna) over {n} search trials{sampled} at matched budget {budget} epochs "
        f"(best validation accuracy by then){skipped}"
    )
    return {k: float(v) for k, v in result.items()}, budget, len(at), note


def importance_rows(trials: pd.DataFrame, epochs: pd.DataFrame) -> list[dict[str, Any]]:
    values, budget, n, note = param_importances(trials, epochs)
    phase = knobs_.search_trials(trials)["phase"].iloc[0] if len(trials) else None
    if not values:
        return [
            {
                "kind": "importance",
                "metric": "fanova_importance",
                "phase": phase,
                "budget_epochs": budget,
                "n": n,
                "note": note,
            }
        ]
    return [
        {
            "kind": "importance",
            "metric": "fanova_importance",
            "rank": rank,
            "phase": phase,
            "budget_epochs": budget,
            "knob": knob,
            "n": n,
            "value": value if math.isfinite(value) else None,
            "note": note,
        }
        for rank, (knob, value) in enumerate(values.items(), 1)
    ]
