"""`report/summary.parquet`: the answers, as one long table with a `kind` column.

Row kinds (every column is documented in `SUMMARY_COLUMNS` and in the Parquet field metadata):

- `question`: the reference study's questions in their own words (analysis.questions): per level
  of the question's knob, mean test accuracy over seeds with a 95 % t-interval; per two levels, the
  seed-paired difference, interval, Holm-corrected test, outcome (better / equivalent / open), minimum
  detectable difference, equivalence bound, verdict, and the sentence over the budget (`over_epochs`).
- `question_epoch`: per question, two levels and epoch, the seed-paired difference of validation
  accuracy at that epoch with its interval and outcome (analysis.over_epochs).
- `ranking`: one row per trial that did not fail, ranked at matched budget: trials are ordered by
  budget reached (`epochs_completed`, most first), then by best validation accuracy, so a trial that
  ASHA stopped after one epoch never ranks above a trial that ran the full budget.
- `config`: one configuration (all knobs but `seed`) over its repeated runs at full budget: mean,
  standard deviation and 95 % t-interval, once per metric (`test_accuracy`, `best_val_accuracy`).
  Repeated runs are the `confirm` phase when it has finished runs, else the finished `search` runs
  (e.g. a grid over seeds). Emitted only when some configuration has at least two runs.
- `paired`: for each knob and each two of its levels, the differences `level - level_b` between runs
  that share the seed and every other knob (repeated runs at full budget), with 95 % t-interval,
  paired t-test p-value, Holm-adjusted p-value (across every paired row of that metric), outcome,
  minimum detectable difference, equivalence bound and a one-line verdict. See `analysis.stats` for why
  a t-interval, `analysis.sequential` for the outcomes and a race's correction for its looks.
- `marginal`: each level of each knob with few levels, over the search trials at one matched budget
  (`budget_epochs`): the best validation accuracy each trial had by that epoch.
- `importance`: each varying knob's fANOVA importance (Optuna) at that matched budget.
- `rung`: for an ASHA experiment (or, as a what-if, a FIFO one), how well each rung judged
  (analysis.rungs): Spearman and Kendall between the rung's metric and the final one, and how many
  of the final top-k were behind the rung's cut-off, with a warning when the rung judges poorly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import Any

import pandas as pd
import pyarrow as pa

from analysis import importance, over_epochs, questions, rungs, sequential, stats
from analysis.knobs import (  # noqa: F401
    MAX_LEVELS,
    MIN_TRIALS_AT_BUDGET,
    NOT_KNOBS,
    is_discrete,
    knob_names,
    level_text,
    matched_budget,
    paired_differences,
    rank_by_value,
    repeated_runs,
    search_trials,
    varying_knobs,
)
from analysis.knobs import finite as _finite
from analysis.knobs import plain as _plain

# 3: the comparison columns alpha, looks, mdd, equivalence_bound, resolution, outcome, over_epochs and the
#    `question_epoch` kind (issue 20); 2: `question` (trials.parquet and epochs.parquet are still at 2).
SCHEMA_VERSION = "3"

KINDS = ("question", "question_epoch", "ranking", "config", "paired", "marginal", "importance", "rung")
COMPARISONS = ("question", "question_epoch", "paired")  # the kinds that compare two levels
METRICS = ("test_accuracy", "best_val_accuracy")  # of repeated runs; test first: it is the held-out answer
BUDGET_METRIC = "val_accuracy_at_budget"

SUMMARY_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    (
        "kind",
        pa.string(),
        "row kind: 'question', 'question_epoch', 'ranking', 'config', 'paired', 'marginal', 'importance' "
        "or 'rung' (see analysis.summary)",
    ),
    (
        "question",
        pa.string(),
        "question, question_epoch rows: the reference study's question they answer (analysis.questions)",
    ),
    (
        "metric",
        pa.string(),
        "what value/std/ci_low/ci_high describe: 'best_val_accuracy', 'test_accuracy', "
        "'val_accuracy_at_budget' (best validation accuracy by epoch budget_epochs), "
        "'val_accuracy' (question_epoch: validation accuracy at epoch budget_epochs), "
        "'fanova_importance', or for rung rows 'rung_spearman', 'rung_kendall', "
        "'rung_top_k_behind'",
    ),
    (
        "rank",
        pa.int64(),
        "1 = best: among all ranking rows; among config rows of one metric; "
        "among a knob's levels (marginal); among knobs (importance); null for paired",
    ),
    ("phase", pa.string(), "trials the row rests on: 'search' or 'confirm'"),
    (
        "budget_epochs",
        pa.int64(),
        "epochs every trial in the row reached; rows are compared only at "
        "equal budget; rung: the final epoch the rung is compared with; question_epoch: the epoch",
    ),
    (
        "config_id",
        pa.string(),
        "12 hex digits identifying the knob values except seed; joins ranking and config rows of one configuration",
    ),
    ("config", pa.string(), "the knobs that vary in the experiment, as 'knob=value, ...'"),
    ("trial_id", pa.string(), "ranking: the trial (trials.parquet trial_id); null otherwise"),
    ("status", pa.string(), "ranking: the trial's status ('completed' or 'stopped'); null otherwise"),
    ("knob", pa.string(), "paired, marginal, importance: the knob (a trials.parquet column)"),
    (
        "level",
        pa.string(),
        "marginal: the knob's level; paired: the first level (difference = level - level_b); rung: the rung's epoch",
    ),
    ("level_b", pa.string(), "paired: the second level"),
    (
        "n",
        pa.int64(),
        "runs (ranking: 1; config, marginal), seed-paired differences (paired) or trials (importance) the row rests on",
    ),
    (
        "value",
        pa.float64(),
        "ranking: best validation accuracy; config, marginal: mean of metric; "
        "paired: mean of level minus level_b; importance: importance (sums to 1)",
    ),
    ("std", pa.float64(), "sample standard deviation (ddof=1) of what value averages; null for n < 2"),
    (
        "ci_low",
        pa.float64(),
        "lower end of the 95 % t-interval of value, cut to where value can lie "
        "(0..1 for accuracies, -1..1 for differences); null for n < 2",
    ),
    ("ci_high", pa.float64(), "upper end of the 95 % t-interval of value, cut like ci_low; null for n < 2"),
    (
        "test_accuracy",
        pa.float64(),
        "ranking: the trial's test accuracy (null unless full budget); config: mean test accuracy of its runs",
    ),
    ("p_value", pa.float64(), "paired, question, question_epoch: two-sided paired t-test of level == level_b"),
    (
        "p_holm",
        pa.float64(),
        "paired: p_value Holm-adjusted across the paired rows of the same metric (question: across the "
        "question's comparisons; question_epoch: those at the epoch), times `looks` (Bonferroni over a race's "
        "looks; 1 without a race); 'better' when below 0.05",
    ),
    (
        "alpha",
        pa.float64(),
        "comparisons: the two-sided level one comparison is held to, 0.05 / (comparisons in its Holm family "
        "x looks), which mdd and equivalence_bound use",
    ),
    (
        "looks",
        pa.int64(),
        "comparisons: how often a race may look at the comparison (max_repeats - min_repeats + 1); 1 for a "
        "fixed number of seeds",
    ),
    (
        "mdd",
        pa.float64(),
        "comparisons: minimum detectable difference at the n seed pairs: the true difference a two-sided "
        "paired t-test at `alpha` finds with power 0.8, for the observed std (noncentral t); null for n < 2",
    ),
    (
        "equivalence_bound",
        pa.float64(),
        "comparisons: the data support |difference| < this (TOST at `alpha`: |value| + t(1 - alpha) * "
        "std / sqrt(n)); null for n < 2",
    ),
    ("resolution", pa.float64(), "comparisons: --resolution as an accuracy difference (0.01 = 1 point)"),
    (
        "outcome",
        pa.string(),
        "comparisons: 'better' (p_holm < 0.05: the sign of value says which level), 'equivalent' "
        "(equivalence_bound <= resolution: no difference larger than the resolution) or 'open' (neither)",
    ),
    (
        "verdict",
        pa.string(),
        "paired, question: one line, 'A beats B by x points, 95 % CI lo to hi', 'no difference larger "
        "than r points: within +-x points' or 'open: no difference detected ...'; question_epoch: who is "
        "ahead at the epoch; rung: the warning, or 'judges well'",
    ),
    (
        "over_epochs",
        pa.string(),
        "question rows of two levels: on validation accuracy, the epoch from which the verdict holds, or "
        "where it changes (analysis.over_epochs)",
    ),
    ("note", pa.string(), "what a row rests on, or why a statistic is missing"),
]
SUMMARY_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"doc": d}) for n, t, d in SUMMARY_COLUMNS],
    metadata={"schema_version": SCHEMA_VERSION, "table": "summary"},
)


def config_ids(trials: pd.DataFrame) -> pd.Series:
    """A stable id per configuration: every knob except the seed."""
    knobs = [k for k in knob_names() if k in trials and k not in NOT_KNOBS]

    def one(row: pd.Series) -> str:
        key = json.dumps({k: _plain(row[k]) for k in knobs}, sort_keys=True, default=str)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    return trials.apply(one, axis=1) if len(trials) else pd.Series([], dtype=str)


def config_labels(trials: pd.DataFrame, knobs: list[str]) -> pd.Series:
    if not knobs:
        return pd.Series(["(the only configuration)"] * len(trials), index=trials.index)
    return trials.apply(lambda r: ", ".join(f"{k}={level_text(r[k])}" for k in knobs), axis=1)


# ---------------------------------------------------------------- ranking


def ranking(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not fail, best first, compared only at matched budget (see module doc)."""
    ok = trials[(trials["status"] != "error") & trials["best_val_accuracy"].notna()].copy()
    return ok.sort_values(
        ["epochs_completed", "best_val_accuracy", "trial_id"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def ranking_rows(trials: pd.DataFrame, knobs: list[str]) -> list[dict[str, Any]]:
    ranked = ranking(trials)
    ids, labels = config_ids(ranked), config_labels(ranked, knobs)
    full = trials["max_epochs"].max() if len(trials) else None
    rows = []
    for i, r in ranked.iterrows():
        stopped = r["epochs_completed"] < r["max_epochs"]
        rows.append(
            {
                "kind": "ranking",
                "metric": "best_val_accuracy",
                "rank": i + 1,
                "phase": r["phase"],
                "budget_epochs": int(r["epochs_completed"]),
                "config_id": ids[i],
                "config": labels[i],
                "trial_id": r["trial_id"],
                "status": r["status"],
                "n": 1,
                "value": float(r["best_val_accuracy"]),
                "test_accuracy": float(r["test_accuracy"]) if _finite(r["test_accuracy"]) else None,
                "note": (
                    f"stopped after {int(r['epochs_completed'])} of {int(r['max_epochs'])} epochs: ranked "
                    f"below every trial with a larger budget"
                    if stopped
                    else f"full budget ({int(full)} epochs)"
                    if full is not None
                    else None
                ),
            }
        )
    return rows


# ---------------------------------------------------------------- repeated runs


def config_rows(rep: pd.DataFrame, knobs: list[str]) -> list[dict[str, Any]]:
    if rep.empty:
        return []
    rep = rep.assign(_cid=config_ids(rep).values, _label=config_labels(rep, knobs).values)
    if rep.groupby("_cid").size().max() < 2:
        return []  # no configuration was repeated: nothing to put an interval on
    rows: list[dict[str, Any]] = []
    for metric in METRICS:
        group_rows = []
        for cid, g in rep.groupby("_cid", sort=True):
            iv = stats.t_interval(g[metric].dropna(), stats.ACCURACY)
            group_rows.append(
                {
                    "kind": "config",
                    "metric": metric,
                    "phase": g["phase"].iloc[0],
                    "budget_epochs": int(g["epochs_completed"].min()),
                    "config_id": cid,
                    "config": g["_label"].iloc[0],
                    **stats.fields(iv),
                    "test_accuracy": stats.null(float(g["test_accuracy"].mean())),
                    "note": f"seeds {sorted(int(s) for s in g['seed'].unique())}"
                    + ("; a single run: no interval" if iv.n < 2 else ""),
                }
            )
        order = sorted(range(len(group_rows)), key=lambda j: -(group_rows[j]["value"] or -math.inf))
        for rank, j in enumerate(order, 1):
            group_rows[j]["rank"] = rank
        rows.extend(group_rows[j] for j in order)
    return rows


def paired_rows(rep: pd.DataFrame, knobs: list[str], design: sequential.Design | None = None) -> list[dict[str, Any]]:
    design = design or sequential.Design()
    rows: list[dict[str, Any]] = []
    if rep.empty or config_ids(rep).value_counts().max() < 2:
        return rows  # single runs: two levels may share a seed by chance, but nothing was repeated
    for metric in METRICS:
        family = []
        for knob in knobs:
            if not is_discrete(rep[knob]):
                continue
            levels = sorted(rep[knob].dropna().unique().tolist(), key=level_text)
            for a, b in itertools.combinations(levels, 2):
                diffs = paired_differences(rep, knob, a, b, metric)
                if diffs.size == 0:
                    continue  # no two runs differ in this knob alone
                iv = stats.t_interval(diffs, stats.DIFFERENCE)
                family.append((knob, a, b, iv))
        assessed = sequential.assess_intervals([iv for *_, iv in family], design)
        for (knob, a, b, iv), r in zip(family, assessed, strict=True):
            la, lb = level_text(a), level_text(b)
            rows.append(
                {
                    "kind": "paired",
                    "metric": metric,
                    "phase": rep["phase"].iloc[0],
                    "budget_epochs": int(rep["epochs_completed"].min()),
                    "knob": knob,
                    "level": la,
                    "level_b": lb,
                    **stats.fields(iv),
                    "p_value": stats.null(iv.p_value),
                    **sequential.row_fields(r, design),
                    "verdict": sequential.verdict(knob, la, lb, iv, r, metric, design),
                    "note": f"paired t-test over {iv.n} seed pairs; Holm across {len(family)} comparisons of {metric}"
                    + (f", Bonferroni over {design.looks} looks" if design.looks > 1 else ""),
                }
            )
    return rows


# ---------------------------------------------------------------- matched budget (search trials)


def marginal_rows(trials: pd.DataFrame, epochs: pd.DataFrame, knobs: list[str]) -> list[dict[str, Any]]:
    search = search_trials(trials)
    budget, score = matched_budget(search, epochs)
    if budget is None:
        return []
    at = search.set_index("trial_id").loc[score.index].assign(_score=score)
    rows = []
    for knob in knobs:
        if not is_discrete(at[knob]):
            continue
        levels = at[knob].dropna().unique().tolist()
        level_rows = []
        for level in levels:
            iv = stats.t_interval(at.loc[at[knob] == level, "_score"], stats.ACCURACY)
            level_rows.append(
                {
                    "kind": "marginal",
                    "metric": BUDGET_METRIC,
                    "phase": at["phase"].iloc[0],
                    "budget_epochs": budget,
                    "knob": knob,
                    "level": level_text(level),
                    **stats.fields(iv),
                    "note": f"{iv.n} search trials that reached epoch {budget}; other knobs vary freely",
                }
            )
        rows.extend(rank_by_value(level_rows))
    return rows


# ---------------------------------------------------------------- all together


def build_summary(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    scheduler: dict[str, Any] | None = None,
    design: sequential.Design | None = None,
) -> pa.Table:
    """Every row kind, in KINDS order, as a table with SUMMARY_SCHEMA. `scheduler`: the experiment's
    ASHA settings (analysis.rungs.settings_from_meta), for the rung rows; None skips them. `design`: how
    the seeds were chosen (analysis.sequential.design_from_meta; default: a fixed number at 1 point)."""
    design = design or sequential.Design()
    knobs = varying_knobs(trials)
    rep = repeated_runs(trials)
    rep_knobs = varying_knobs(rep) if len(rep) else []
    question_rows = questions.question_rows(rep, design=design)
    epoch_rows, sentences = over_epochs.epoch_rows(rep, epochs, design)
    for r in question_rows:
        if r.get("level_b") is not None:
            r["over_epochs"] = sentences.get((r["question"], r["level"], r["level_b"]))
    rows = (
        question_rows
        + epoch_rows
        + ranking_rows(trials, knobs)
        + config_rows(rep, knobs)
        + paired_rows(rep, rep_knobs, design)
        + marginal_rows(trials, epochs, knobs)
        + importance.importance_rows(trials, epochs)
        + rungs.rung_rows(trials, epochs, scheduler)
    )
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
