"""analysis.questions: the reference study's two questions answered from a synthetic reference grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from synthetic import trial_row, write_experiment

from analysis import knobs, questions, report, summary, tables

# Known answers: on BaseNet, BN after ReLU beats none by 6 points on every seed and before ReLU equals
# none; on the ConvNet, whitening loses 4 points to simple on every seed and complex equals simple.
BASENET = {"none": 0.0, "before_relu": 0.0, "after_relu": 0.06}
CONVNET = {"simple": 0.0, "complex": 0.0, "whitening": -0.04}
REFERENCE = {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32}


def reference_rows(basenet_seeds: int = 3, convnet_seeds: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(basenet_seeds):
        base = 0.30 + rng.normal(0, 0.02)  # seed noise shared by the paired cells
        for bn, effect in BASENET.items():
            acc = base + effect
            rows.append(
                trial_row(
                    f"b{bn}{seed}", seed=seed, best_val=acc, test=acc, model="basenet", bn_position=bn, **REFERENCE
                )
            )
    for seed in range(convnet_seeds):
        base = 0.50 + rng.normal(0, 0.02)
        for aug, effect in CONVNET.items():
            acc = base + effect
            rows.append(
                trial_row(
                    f"c{aug}{seed}",
                    seed=seed,
                    best_val=acc,
                    test=acc,
                    model="convnet",
                    bn_position="after_relu",
                    augmentation=aug,
                    **REFERENCE,
                )
            )
    return rows


def frame(rows: list[dict]) -> pd.DataFrame:
    return pa.Table.from_pylist(rows, schema=tables.TRIALS_SCHEMA).to_pandas()


def test_question_rows_rank_the_levels_and_pair_them_by_seed() -> None:
    rows = pd.DataFrame(questions.question_rows(knobs.repeated_runs(frame(reference_rows()))))
    bn = rows[rows["question"] == "Where does BatchNorm belong on BaseNet?"]
    levels = bn[bn["level_b"].isna()].sort_values("rank")
    assert levels["level"].iloc[0] == "after_relu" and set(levels["n"]) == {3}
    pair = bn[(bn["level"] == "after_relu") & (bn["level_b"] == "none")].iloc[0]
    assert pair["value"] == pytest.approx(0.06) and pair["n"] == 3
    assert pair["verdict"].startswith("bn_position: after_relu beats none by 6.0 points")
    aug = rows[rows["question"] == "Which augmentation helps the ConvNet?"]
    # complex reads flip/zoom_range and simple does not: still paired, by seed, on everything else.
    pair = aug[(aug["level"] == "complex") & (aug["level_b"] == "simple")].iloc[0]
    assert pair["n"] == 2 and pair["value"] == pytest.approx(0.0)
    assert set(aug.loc[aug["level_b"].isna(), "n"]) == {2}


def test_a_grid_without_a_questions_cells_gets_no_rows_for_it() -> None:
    basenet_only = [r for r in reference_rows() if r["model"] == "basenet"]
    rows = questions.question_rows(knobs.repeated_runs(frame(basenet_only)))
    assert {r["question"] for r in rows} == {"Where does BatchNorm belong on BaseNet?"}
    one_level = [r for r in basenet_only if r["bn_position"] == "none"]
    assert questions.question_rows(knobs.repeated_runs(frame(one_level))) == []


def test_report_answers_both_questions_first(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path / "reference", reference_rows())
    result = report.build_report(str(exp))
    md = (exp / "report" / "report.md").read_text()
    first = md.index("## The study's questions")
    assert first < md.index("## Answer: paired-by-seed comparisons")
    assert md.index("### Where does BatchNorm belong on BaseNet?") < md.index(
        "### Which augmentation helps the ConvNet?"
    )
    assert "**after_relu** has the highest mean test_accuracy" in md
    assert "bn_position: after_relu beats none by 6.0 points" in md
    assert "augmentation: simple vs whitening" in md or "augmentation: simple beats whitening" in md
    # complex equals simple on every seed: settled as no difference larger than the resolution.
    assert "it is within the resolution of simple (no difference larger)" in md
    kinds = set(result["summary"]["kind"])
    assert "question" in kinds and set(kinds) <= set(summary.KINDS)
    assert (exp / "report" / "study_questions.png").stat().st_size > 5_000
