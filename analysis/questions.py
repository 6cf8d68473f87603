"""The reference study's two questions, answered in their own words from repeated full-budget runs.

- "Where does BatchNorm belong on BaseNet?": bn_position none / before_relu / after_relu, BaseNet rows.
- "Which augmentation helps the ConvNet?": augmentation simple / complex / whitening, ConvNet rows.

Each answer is a block of `question` rows of summary.parquet: one per level (mean test accuracy over
seeds with its 95 % t-interval, ranked) and one per two levels (the seed-paired difference, its
interval, paired t-test and Holm correction within the question, the verdict's outcome (better,
equivalent within the resolution, or open; analysis.sequential), its minimum detectable difference and
equivalence bound). An experiment that holds fewer than two levels of a question's knob on its model gets
no rows for it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis import knobs, sequential, stats

METRIC = "test_accuracy"  # the held-out answer; validation chose nothing here (every cell is fixed)


@dataclasses.dataclass(frozen=True)
class Question:
    text: str
    knob: str
    where: Mapping[str, Any]  # the rows the question is about, e.g. {"model": "basenet"}


QUESTIONS = (
    Question("Where does BatchNorm belong on BaseNet?", "bn_position", {"model": "basenet"}),
    Question("Which augmentation helps the ConvNet?", "augmentation", {"model": "convnet"}),
)


def rows_of(rep: pd.DataFrame, question: Question) -> pd.DataFrame:
    mask = pd.Series(True, index=rep.index)
    for knob, value in question.where.items():
        mask &= rep[knob] == value if knob in rep else False
    return rep[mask & rep[question.knob].notna() & rep[METRIC].notna()] if question.knob in rep else rep[:0]


def question_rows(
    rep: pd.DataFrame, questions: tuple[Question, ...] = QUESTIONS, design: sequential.Design | None = None
) -> list[dict[str, Any]]:
    """`question` rows for each question whose rows hold two or more levels of its knob; `design`: how
    the experiment's seeds were chosen (a race corrects for its looks; analysis.sequential)."""
    design = design or sequential.Design()
    rows: list[dict[str, Any]] = []
    for q in questions:
        sub = rows_of(rep, q)
        levels = sorted(sub[q.knob].unique().tolist(), key=knobs.level_text) if len(sub) else []
        if len(levels) < 2:
            continue
        common = {
            "kind": "question",
            "question": q.text,
            "metric": METRIC,
            "knob": q.knob,
            "phase": sub["phase"].iloc[0],
            "budget_epochs": int(sub["epochs_completed"].min()),
        }
        level_rows = []
        for level in levels:
            runs = sub[sub[q.knob] == level]
            iv = stats.t_interval(runs[METRIC], stats.ACCURACY)
            level_rows.append(
                {
                    **common,
                    "level": knobs.level_text(level),
                    **stats.fields(iv),
                    "note": f"seeds {sorted(int(s) for s in runs['seed'].unique())}",
                }
            )
        knobs.rank_by_value(level_rows)
        pairs = []
        for a, b in itertools.combinations(levels, 2):
            diffs = knobs.paired_differences(sub, q.knob, a, b, METRIC)
            if diffs.size:
                pairs.append((a, b, stats.t_interval(diffs.tolist(), stats.DIFFERENCE)))
        # Holm within this question's comparisons (and, in a race, Bonferroni over its looks)
        assessed = sequential.assess_intervals([iv for *_, iv in pairs], design)
        pair_rows = [
            {
                **common,
                "level": knobs.level_text(a),
                "level_b": knobs.level_text(b),
                **stats.fields(iv),
                "p_value": stats.null(iv.p_value),
                **sequential.row_fields(r, design),
                "verdict": sequential.verdict(q.knob, knobs.level_text(a), knobs.level_text(b), iv, r, METRIC, design),
                "note": f"paired t-test over {iv.n} seed pairs; Holm across the {len(pairs)} comparisons "
                "of this question" + (f", Bonferroni over {design.looks} looks" if design.looks > 1 else ""),
            }
            for (a, b, iv), r in zip(pairs, assessed, strict=True)
        ]
        rows += level_rows + pair_rows
    return rows


def answer(rows: pd.DataFrame, question: str) -> str:
    """The question's answer in one paragraph: the best level, and whether it beat each other level."""
    q = rows[(rows["kind"] == "question") & (rows["question"] == question)]
    levels = q[q["level_b"].isna()].sort_values("rank")
    if levels.empty:
        return ""
    best = levels.iloc[0]
    pairs = q[q["level_b"].notna()]
    beaten = [
        r
        for r in pairs.itertuples()
        if best["level"] in (r.level, r.level_b)
        and r.p_holm is not None
        and not pd.isna(r.p_holm)
        and r.p_holm < stats.ALPHA
        and (r.value > 0) == (r.level == best["level"])
    ]
    others = [lv for lv in levels["level"] if lv != best["level"]]
    losers = {r.level_b if r.level == best["level"] else r.level for r in beaten}
    mine = [r for r in pairs.itertuples() if best["level"] in (r.level, r.level_b)]
    same = {
        r.level_b if r.level == best["level"] else r.level
        for r in mine
        if getattr(r, "outcome", None) == sequential.EQUIVALENT
    }
    rest = sorted(set(others) - losers - same)
    if pairs.empty:
        verdict = "no seed-paired runs, so no difference can be tested"
    elif losers == set(others):
        verdict = f"it beats every other placement/policy ({', '.join(others)}) on seed-paired runs"
    else:
        parts = [f"it beats {', '.join(sorted(losers))} on seed-paired runs"] if losers else []
        if same:
            parts.append(f"it is within the resolution of {', '.join(sorted(same))} (no difference larger)")
        if rest:
            parts.append(
                f"against {', '.join(rest)} the answer is open (no difference detected, but none larger than "
                "the resolution ruled out either; more seeds could settle it)"
            )
        verdict = "; ".join(parts) if parts else "no difference between levels is detected on seed-paired runs"
    return (
        f"**{best['level']}** has the highest mean {METRIC} ({best['value']:.4f} over n={int(best['n'])} seeds"
        + (f", 95 % CI {best['ci_low']:.4f} to {best['ci_high']:.4f}" if not pd.isna(best["ci_low"]) else "")
        + f"); {verdict}."
    )
