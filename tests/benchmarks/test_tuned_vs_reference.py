"""benchmarks/tuned_vs_reference.py on synthetic experiments whose answer is known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pandas as pd
import pyarrow as pa
import tuned_vs_reference
from synthetic import trial_row

from analysis import tables


def frame(rows: list[dict]) -> pd.DataFrame:
    return pa.Table.from_pylist(rows, schema=tables.TRIALS_SCHEMA).to_pandas()


def test_best_confirmed_config_against_best_reference_cell_paired_by_seed() -> None:
    seed_noise = {0: 0.00, 1: 0.01, 2: -0.02, 3: 0.03, 4: 0.0}
    reference = [
        trial_row(f"r{bn}{s}", seed=s, model="basenet", bn_position=bn, test=0.30 + lift + seed_noise[s])
        for s in range(5)
        for bn, lift in (("none", 0.0), ("after_relu", 0.04))
    ]
    tuned = [
        trial_row(
            f"c{lr}{s}",
            phase="confirm",
            seed=s,
            model="basenet",
            optimizer="adam",
            learning_rate=lr,
            test=0.30 + lift + seed_noise[s],
        )
        for s in (1, 2, 3)
        for lr, lift in ((1e-3, 0.10), (3e-3, 0.05))
    ]
    row = tuned_vs_reference.compare(frame(tuned), frame(reference), "basenet").iloc[0]
    assert "learning_rate=0.001" in row["tuned_config"] and "after_relu" in row["reference_cell"]
    assert row["paired_seeds"] == "1 2 3"
    assert row["difference"] == pytest.approx(0.06)  # 0.40 - 0.34 on every shared seed
    assert row["diff_ci_low"] == pytest.approx(0.06) and row["diff_ci_high"] == pytest.approx(0.06)
