"""Checkpoints pruned while a search runs (tuning.checkpoint_pruning) and the two ways a trial comes back:
a worker killed (the driver retries the trial) and the driver killed (--resume). Real searches on digits,
one trial, Tune's snapshot every second (TUNE_GLOBAL_CHECKPOINT_S) and a copy bound of a second, so the
pruner deletes as the trial goes rather than only at the end."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests import fault_plugin
from tests.search_runs import (
    FAULT_PLUGIN,
    assert_one_row_per_trial_and_epoch,
    assert_study_matches,
    fault_env,
    reap,
    reports,
    resume_to_end,
    start,
    tables,
)
from tuning.checkpoint_pruning import SLOW_COPY_ENV

pytestmark = pytest.mark.slow

ONE_TRIAL = ("--space", "batchnorm", "--dataset", "digits", "--scheduler", "fifo", "--max-concurrent", "1")
ONE_TRIAL += ("--max-failures", "3", "--plugin", str(FAULT_PLUGIN), "--num-samples", "1")
FREQUENT_SNAPSHOTS = {"TUNE_GLOBAL_CHECKPOINT_S": "1", SLOW_COPY_ENV: "1"}


def checkpoints(trial_dir: Path) -> dict[str, int]:
    """{checkpoint folder: the epoch its state.json holds} of a trial's folder on the storage."""
    return {
        p.parent.name: json.loads(p.read_text())["epoch"] for p in sorted(trial_dir.glob("checkpoint_*/state.json"))
    }


def test_a_retried_trial_and_a_resumed_run_restore_their_latest_kept_checkpoint_after_pruning(tmp_path):
    # The worker dies once epoch 3 is reported and checkpointed; later, with epoch 5 reported, the driver.
    faults = [{"at": "report_done", "epoch": 3}, {"at": "report_done", "epoch": 5, "do": "kill_driver"}]
    plan, env = fault_env(tmp_path, faults)
    env = {**env, **FREQUENT_SNAPSHOTS}
    args = (*ONE_TRIAL, "--max-epochs", "7", "--keep-checkpoints", "1", "--storage-path", str(tmp_path))
    log = tmp_path / "log"
    proc = start(*args, "--name", "x", log=log, env=env)
    try:
        assert proc.wait(timeout=600) == -signal.SIGKILL, log.read_text()[-4000:]
    finally:
        reap(proc)
    exp = tmp_path / "x"
    assert [(f["at"], f["epoch"]) for f in fault_plugin.fired(plan)] == [("report_done", 3), ("report_done", 5)]
    (trial,) = reports(exp)
    at_kill = checkpoints(exp / "search" / trial)
    # Pruned as the trial went: epoch 1's checkpoint fell out at epoch 2, three epochs and a retry ago.
    assert "checkpoint_000000" not in at_kill and max(at_kill.values()) == 5, at_kill

    resume_to_end(tmp_path, timeout=600, env=env)
    rows = reports(exp)[trial]
    attempts: list[list[dict]] = []  # the trial's rows by worker process, in order
    for row in rows:
        if attempts and attempts[-1][0]["pid"] == row["pid"]:
            attempts[-1].append(row)
        else:
            attempts.append([row])
    epochs_by_attempt = [[r["epoch"] for r in rows] for rows in attempts]
    assert len(attempts) == 3 and epochs_by_attempt[0] == [1, 2, 3], epochs_by_attempt
    # The retry went on from checkpoint 3, the latest kept. The resumed run restored the checkpoint the
    # last snapshot copied to the storage named: still there at the kill, though pruning to one had gone
    # on. That is the checkpoint of the retry's last row on the storage (4, or 5), or of a row before it,
    # back to the retry's start (3): a snapshot's upload runs beside Tune's loop, so rows logged after the
    # snapshot was written can reach the storage with it (the tables keep an epoch's later report,
    # analysis.tables._epochs_of).
    retried, resumed = attempts[1][0], attempts[2][0]
    assert retried["epoch"] == 4 and retried["iterations_since_restore"] == 1
    restored = resumed["epoch"] - 1
    assert resumed["iterations_since_restore"] == 1 and restored in at_kill.values(), (restored, at_kill)
    assert 3 <= restored <= epochs_by_attempt[1][-1], (restored, epochs_by_attempt)
    assert epochs_by_attempt[2][-1] == 7
    trials, epochs = tables(exp)
    assert (trials["status"] == "completed").all() and (trials["epochs_completed"] == 7).all()
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert_study_matches(exp, trials)
    assert checkpoints(exp / "search" / trial) == {"checkpoint_000006": 7}  # at the end: the one kept
