"""analysis.over_epochs: verdicts over the budget on a synthetic BN question whose validation curves
cross at a known epoch (none leads until epoch 5, they are level at 5, after_relu leads from 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic import epoch_rows, trial_row, write_experiment

from analysis import over_epochs, report, sequential

QUESTION = "Where does BatchNorm belong on BaseNet?"
EPOCHS, CROSS, SEEDS = 10, 5, 4
REFERENCE = {"model": "basenet", "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32, "max_epochs": EPOCHS}


def crossing_experiment(root: Path) -> Path:
    """BaseNet without BN flat at 0.55; with BN after ReLU rising 5 points an epoch from 0.30, equal at
    epoch CROSS; per-seed noise shared by the pair, 0.2 points of each run's own."""
    rng = np.random.default_rng(0)
    rows, epochs = [], []
    for seed in range(SEEDS):
        shared = rng.normal(0, 0.02)
        for bn, curve in (
            ("none", [0.55] * EPOCHS),
            ("after_relu", [0.30 + 0.05 * e for e in range(1, EPOCHS + 1)]),
        ):
            vals = [float(v + shared + rng.normal(0, 0.002)) for v in curve]
            row = trial_row(
                f"{bn}{seed}",
                epochs=EPOCHS,
                best_val=max(vals),
                test=vals[-1],
                seed=seed,
                bn_position=bn,
                **REFERENCE,
            )
            rows.append(row)
            epochs += epoch_rows(row, curve=vals)
    return write_experiment(root, rows, epochs)


def test_the_verdict_over_epochs_names_the_epoch_the_curves_cross(tmp_path: Path) -> None:
    exp = crossing_experiment(tmp_path / "cross")
    result = report.build_report(str(exp))
    s = result["summary"]
    rows = s[s["kind"] == "question_epoch"].sort_values("budget_epochs")
    assert list(rows["budget_epochs"]) == list(range(1, EPOCHS + 1))
    assert set(rows["level"]) == {"after_relu"} and set(rows["level_b"]) == {"none"}
    assert set(rows["metric"]) == {"val_accuracy"} and (rows["n"] == SEEDS).all()
    # The difference after_relu - none is 5 points an epoch from -20 at epoch 1: 0 at the crossing.
    expected = [0.05 * (e - CROSS) for e in range(1, EPOCHS + 1)]
    assert rows["value"].to_numpy() == pytest.approx(expected, abs=0.004)
    outcomes = rows.set_index("budget_epochs")["outcome"]
    assert (outcomes.loc[: CROSS - 1] == "better").all() and (
        rows.set_index("budget_epochs")["value"].loc[: CROSS - 1] < 0
    ).all()
    assert outcomes.loc[CROSS] == "equivalent"  # level within the 1-point resolution
    assert (outcomes.loc[CROSS + 1 :] == "better").all()
    assert rows["verdict"].iloc[0] == "none ahead" and rows["verdict"].iloc[-1] == "after_relu ahead"
    (pair,) = s[(s["kind"] == "question") & (s["level_b"] == "none") & (s["level"] == "after_relu")]["over_epochs"]
    assert pair == (
        "after_relu - none (validation accuracy): after_relu ahead from epoch 6 on (to 10); before that none "
        "ahead at epochs 1-4, no difference larger than 1.0 points at epoch 5; the verdict changes sign"
    )
    # The figure and the report's sentence.
    folder = exp / "report"
    png = (folder / "verdict_over_epochs.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (folder / "report.md").read_text()
    assert "Over the budget" in md and pair in md and "](verdict_over_epochs.png)" in md
    table = pq.read_table(folder / "summary.parquet")
    assert table.schema.field("over_epochs").metadata[b"doc"] and table.schema.metadata[b"schema_version"] == b"3"


def test_the_sentence_for_a_verdict_that_holds_throughout_or_ends_open() -> None:
    design = sequential.Design()
    held = over_epochs.sentence([(1, "A"), (2, "A"), (3, "A")], "x", "y", design)
    assert held == "x - y (validation accuracy): x ahead at every epoch (1-3)"
    late = over_epochs.sentence([(1, "open"), (2, "open"), (3, "B"), (4, "B")], "x", "y", design)
    assert late == "x - y (validation accuracy): y ahead from epoch 3 on (to 4); before that open at epochs 1-2"
    lost = over_epochs.sentence([(1, "A"), (2, "open")], "x", "y", design)
    assert (
        lost == "x - y (validation accuracy): open from epoch 2 to the full budget (2); before that x ahead at epoch 1"
    )
