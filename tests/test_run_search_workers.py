"""A reused worker replaced between two trials (--worker-memory-growth, tuning.worker_memory), end to end: the
trials after it run in a fresh worker, and no trial fails, is retried or loses or repeats an epoch."""

import pytest

from tests.search_runs import SEARCH, assert_one_row_per_trial_and_epoch, assert_study_matches, reports, tables

pytestmark = pytest.mark.slow


def test_a_replaced_worker_loses_no_trial_and_no_epoch(search, tmp_path):
    # A limit no worker stays under past its first trial (every fit leaves its graph: the memory grows):
    # each worker runs two trials, then is replaced.
    out = search(
        *SEARCH,
        "--num-samples",
        "4",
        "--max-epochs",
        "2",
        "--worker-memory-growth",
        "0.0001",
        "--max-failures",
        "0",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = tmp_path / "x"
    trials, epochs = tables(exp)
    assert len(trials) == 4 and (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert (trials["epochs_completed"] == 2).all() and trials["test_accuracy"].notna().all()
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert_study_matches(exp, trials)
    by_trial = sorted(reports(exp).values(), key=lambda rows: rows[0]["timestamp"])
    pids = []
    for rows in by_trial:
        # One worker per trial, never restored (a failed or retried trial restarts: iterations from 1 again).
        assert [r["epoch"] for r in rows] == [1, 2] and len({r["pid"] for r in rows}) == 1, rows
        assert [r["iterations_since_restore"] for r in rows] == [1, 2]
        pids.append(rows[0]["pid"])
    # Reused for the second trial, then replaced: a new process for the third, reused for the fourth.
    assert pids[0] == pids[1] != pids[2] == pids[3], pids
    assert by_trial[1][-1]["worker_rss_mb"] > by_trial[0][-1]["worker_rss_mb"]
