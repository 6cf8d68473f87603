"""--repeats auto through real Ray runs on the bundled digits data: the race gives seeds only to cells in
an open comparison, the tables hold every trial once, and --resume after Ctrl-C continues the race
without re-running a seed. Then the flags' checks (exit 2, nothing started)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import sequential
from tests.search_runs import assert_one_row_per_trial_and_epoch, finished, reap, reports, resume_to_end, start, tables

# Three BaseNet cells on digits: `patience` 0 and 50 train alike (early stopping never triggers in two
# epochs), so their comparison is settled as equivalent (identical on every seed) at the first look;
# learning rate 0.01 against 0.03 differs from seed to seed, so it is open at two seeds (a paired interval
# over two seeds is never tight enough). The patience-50 cell stops at the minimum; the other two race on.
PLUGIN = """
from search_spaces import SearchSpace, register_space
from search_spaces.reference import REFERENCE, define

CELL = {"model": "basenet", "bn_position": "before_relu", "augmentation": "simple", **REFERENCE}
register_space(
    SearchSpace(
        name="race_demo",
        description="three digits cells whose comparisons settle at different seeds",
        define=define,
        dataset="digits",
        num_samples=3,
        max_epochs=2,
        grid=[{**CELL, "patience": 0}, {**CELL, "patience": 50}, {**CELL, "learning_rate": 0.03, "patience": 0}],
    )
)
"""
RACE = ("--search", "grid", "--repeats", "auto", "--min-repeats", "2", "--max-repeats", "4", "--scheduler", "fifo")


def seeds_per_cell(trials: pd.DataFrame) -> dict[tuple[float, int], list[int]]:
    return {
        (lr, patience): sorted(int(s) for s in g["seed"])
        for (lr, patience), g in trials.groupby(["learning_rate", "patience"])
    }


@pytest.mark.slow
def test_a_raced_digits_grid_resumed_after_ctrl_c_gives_seeds_where_comparisons_are_open(tmp_path: Path) -> None:
    plugin = tmp_path / "race_demo.py"
    plugin.write_text(PLUGIN)
    exp, log = tmp_path / "x", tmp_path / "log"
    args = ("--plugin", str(plugin), "--space", "race_demo", *RACE, "--max-epochs", "2")
    proc = start(*args, "--storage-path", str(tmp_path), "--name", "x", log=log)
    try:
        # Ctrl-C once the first round (3 cells x 2 seeds) is in: the race is between rounds or in the next.
        deadline = time.monotonic() + 600
        while len(finished(exp, 2)) < 6:
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()[-4000:]
    finally:
        reap(proc)
    assert "resume with: python run_search.py --resume --name x" in log.read_text()
    before = reports(exp)
    done_before = [t for t, rows in before.items() if any(r.get("epoch") == 2 for r in rows)]
    assert len(done_before) >= 6

    resumed = resume_to_end(tmp_path, timeout=600)
    assert "race done (grid)" in resumed.stdout, resumed.stdout[-3000:]
    after = reports(exp)
    for trial in done_before:  # not one of them trained again
        assert after[trial] == before[trial], trial

    trials, epochs = tables(exp)
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert not trials.duplicated(["learning_rate", "patience", "seed"]).any()  # every (cell, seed) once
    seeds = seeds_per_cell(trials)
    # The settled cell stopped at the minimum; the two in the open comparison got more seeds, the same ones.
    assert seeds[(0.01, 50)] == [0, 1], seeds
    assert seeds[(0.01, 0)] == seeds[(0.03, 0)] and len(seeds[(0.01, 0)]) in (3, 4), seeds
    assert len(trials) == sum(len(s) for s in seeds.values())

    # The race stopped where the rule says: at the final seeds, no comparison with a cell below the
    # maximum is open (recomputed from the table with the same procedure).
    design = sequential.race_design(2, 4, None)
    cells = [
        {"learning_rate": 0.01, "patience": 0},
        {"learning_rate": 0.01, "patience": 50},
        {"learning_rate": 0.03, "patience": 0},
    ]
    values = np.full((1, 3, 4), np.nan)
    n = np.zeros((1, 3), dtype=int)
    for i, c in enumerate(cells):
        runs = trials[(trials["learning_rate"] == c["learning_rate"]) & (trials["patience"] == c["patience"])]
        for r in runs.itertuples():
            values[0, i, int(r.seed)] = r.test_accuracy
        n[0, i] = len(runs)
    comparisons = sequential.grid_comparisons(cells)
    a, extend = sequential.grid_round(values, n, comparisons, design)
    assert not extend.any()
    outcome = dict(zip((c.knob for c in comparisons), a.outcome[0].tolist(), strict=True))
    assert outcome["patience"] == "equivalent"

    # The report says it: the comparisons' outcomes, their MDD and the race's looks.
    summary = pd.read_parquet(exp / "report" / "summary.parquet")
    paired = summary[(summary["kind"] == "paired") & (summary["metric"] == "test_accuracy")]
    patience = paired[paired["knob"] == "patience"].iloc[0]
    assert patience["outcome"] == "equivalent" and patience["n"] == 2 and patience["looks"] == 3
    lr = paired[paired["knob"] == "learning_rate"].iloc[0]
    assert lr["n"] == len(seeds[(0.01, 0)]) and lr["mdd"] > 0
    md = (exp / "report" / "report.md").read_text()
    assert "Seeds were raced (`--repeats auto`, 2 to 4" in md


def test_race_flags_are_checked_before_anything_starts(search, tmp_path: Path) -> None:
    base = ("--space", "reference", "--search", "grid", "--dataset", "digits", "--storage-path", str(tmp_path))
    for extra, words in (
        (("--repeats", "auto"), ("--scheduler fifo",)),
        (("--repeats", "auto", "--scheduler", "fifo", "--min-repeats", "1"), ("--min-repeats must be >= 2",)),
        (("--repeats", "auto", "--scheduler", "fifo", "--max-repeats", "2"), ("--max-repeats 2 is below",)),
        (("--repeats", "3", "--max-repeats", "5"), ("--max-repeats applies to --repeats auto",)),
        (("--repeats", "3", "--resolution", "-1"), ("--resolution must be a positive",)),
        (("--repeats", "often"), ("--repeats", "'auto'")),
    ):
        out = search(*base, *extra)
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        for word in words:
            assert word in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []
