"""Verdicts over the budget: each question's seed-paired difference of validation accuracy at every epoch.

An answer given at the full budget can move with the budget (BatchNorm leads early and the lead shrinks;
a policy that regularises is still climbing at the last epoch). For each of the report's questions
(analysis.questions) and each two levels of its knob, the repeated full-budget runs are paired by seed at
every epoch 1 .. budget on their validation accuracy (the epochs table; test accuracy exists only at the
end): mean difference, 95 % t-interval, paired t-test, Holm across the question's comparisons at that
epoch (Bonferroni over a race's looks, as for the question itself), and the outcome of
analysis.sequential (one level ahead, equivalent within the resolution, or open). Rows of kind
`question_epoch` in summary.parquet (`budget_epochs` = the epoch), one sentence per comparison in the
`over_epochs` column of its `question` row: the epoch from which the verdict holds, or where it changes.
The per-epoch outcomes describe the curves; they are not a further test over epochs.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from analysis import knobs, questions, sequential, stats

KIND = "question_epoch"
METRIC = "val_accuracy"
_VALUE = "_val_at_epoch"


def epoch_rows(
    rep: pd.DataFrame,
    epochs: pd.DataFrame,
    design: sequential.Design | None = None,
    qs: tuple[questions.Question, ...] = questions.QUESTIONS,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], str]]:
    """(`question_epoch` rows, {(question, level, level_b): the sentence over the budget})."""
    design = design or sequential.Design()
    rows: list[dict[str, Any]] = []
    sentences: dict[tuple[str, str, str], str] = {}
    if rep.empty or epochs.empty:
        return rows, sentences
    curves = epochs.pivot_table(index="trial_id", columns="epoch", values=METRIC, aggfunc="last")
    for q in qs:
        sub = questions.rows_of(rep, q)
        sub = sub[sub["trial_id"].isin(curves.index)]
        levels = sorted(sub[q.knob].unique().tolist(), key=knobs.level_text) if len(sub) else []
        if len(levels) < 2:
            continue
        budget = int(sub["epochs_completed"].min())
        pairs = list(itertools.combinations(levels, 2))
        labels: dict[tuple[Any, Any], list[tuple[int, str]]] = {p: [] for p in pairs}
        for epoch in range(1, budget + 1):
            if epoch not in curves.columns:
                continue
            at = sub.assign(**{_VALUE: curves.loc[sub["trial_id"], epoch].to_numpy()})
            found = []
            for a, b in pairs:
                diffs = knobs.paired_differences(at, q.knob, a, b, _VALUE)
                found.append((a, b, stats.t_interval(diffs.tolist(), stats.DIFFERENCE)))
            assessed = sequential.assess_intervals([iv for *_, iv in found], design)
            for (a, b, iv), r in zip(found, assessed, strict=True):
                la, lb = knobs.level_text(a), knobs.level_text(b)
                label = sequential.outcome_label(r["outcome"], iv.mean) if iv.n >= 2 else sequential.OPEN
                labels[(a, b)].append((epoch, label))
                rows.append(
                    {
                        "kind": KIND,
                        "question": q.text,
                        "metric": METRIC,
                        "phase": sub["phase"].iloc[0],
                        "budget_epochs": epoch,
                        "knob": q.knob,
                        "level": la,
                        "level_b": lb,
                        **stats.fields(iv),
                        "p_value": None if iv.n < 2 else _none(iv.p_value),
                        **sequential.row_fields(r, design),
                        "verdict": words(label, la, lb, design),
                        "note": f"validation accuracy at epoch {epoch}, paired over {iv.n} seeds; Holm across "
                        f"the {len(pairs)} comparisons of this question at this epoch",
                    }
                )
        for a, b in pairs:
            la, lb = knobs.level_text(a), knobs.level_text(b)
            sentences[(q.text, la, lb)] = sentence(labels[(a, b)], la, lb, design)
    return rows, sentences


def _none(x: float) -> float | None:
    return None if x != x else float(x)  # NaN -> null


def words(label: str, level_a: str, level_b: str, design: sequential.Design) -> str:
    if label == "A":
        return f"{level_a} ahead"
    if label == "B":
        return f"{level_b} ahead"
    if label == sequential.EQUIVALENT:
        return f"no difference larger than {stats.points(design.resolution)} points"
    return "open"


def sentence(labels: list[tuple[int, str]], level_a: str, level_b: str, design: sequential.Design) -> str:
    """One sentence over the epochs: the verdict at the full budget and the epoch from which it holds,
    and what it was before (or that it changes sign)."""
    if not labels:
        return f"{level_a} - {level_b}: no epochs to compare"
    runs: list[list[Any]] = []  # [label, first epoch, last epoch]
    for epoch, label in labels:
        if runs and runs[-1][0] == label:
            runs[-1][2] = epoch
        else:
            runs.append([label, epoch, epoch])
    head = f"{level_a} - {level_b} (validation accuracy)"
    first, last = labels[0][0], labels[-1][0]

    def span(run: list[Any]) -> str:
        return f"epoch {run[1]}" if run[1] == run[2] else f"epochs {run[1]}-{run[2]}"

    final = runs[-1]
    if len(runs) == 1:
        return f"{head}: {words(final[0], level_a, level_b, design)} at every epoch ({first}-{last})"
    if final[0] == sequential.OPEN:
        now = f"open from epoch {final[1]} to the full budget ({last})"
    else:
        now = f"{words(final[0], level_a, level_b, design)} from epoch {final[1]} on (to {last})"
    before = ", ".join(f"{words(r[0], level_a, level_b, design)} at {span(r)}" for r in runs[:-1])
    seen = {r[0] for r in runs}
    change = "; the verdict changes sign" if {"A", "B"} <= seen else ""
    return f"{head}: {now}; before that {before}{change}"
