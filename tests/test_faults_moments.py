"""Kills at the dangerous moments of a trial, triggered by its progress (tests/fault_plugin.py), on real
searches (digits, one trial at a time, FIFO): what epochs.parquet, trials.parquet, the Optuna study and
the checkpoints recorded afterwards. Each moment is reached by the trial's own progress, so each test
proves the same on a machine twice as fast or twice as loaded.

Tune's periodic experiment snapshot (a timer: every >= 10 s) is off (tests/test_faults.py
NO_PERIODIC_SNAPSHOT): a snapshot, which is also what syncs the driver's result.json files to the storage,
is taken when the run starts, when a trial has made 2 checkpoints since the last one (--keep-checkpoints 2
forces it) and when the run ends. So what the storage holds at each kill follows from progress alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests import fault_plugin
from tests.conftest import BUCKET
from tests.search_runs import (
    FAULT_PLUGIN,
    assert_one_row_per_trial_and_epoch,
    assert_study_matches,
    fault_env,
    optuna_trials,
    reap,
    reports,
    resume_to_end,
    start,
    tables,
    terminated_in_snapshot,
)

pytestmark = pytest.mark.slow

# BaseNet trials: about a second an epoch on digits (the batchnorm space's first draws are ConvNets of
# several seconds an epoch); each moment below is reached by progress, whatever the model.
ONE_AT_A_TIME = ("--space", "basenet", "--dataset", "digits", "--scheduler", "fifo", "--max-concurrent", "1")
ONE_AT_A_TIME += ("--max-failures", "3", "--plugin", str(FAULT_PLUGIN))


def run(tmp_path: Path, faults: list[dict[str, Any]], *args: str, exit_code: int = 0, env: dict | None = None):
    """run_search.py of experiment `x` (in tmp_path unless args name a --storage-path) with the plugin and
    its plan, to its end or its kill; `env`: added to the environment. Returns (experiment folder, what
    each fault hit, the environment a resume needs)."""
    plan, fault_vars = fault_env(tmp_path, faults)
    if "--storage-path" not in args:
        args = (*args, "--storage-path", str(tmp_path))
    log = tmp_path / "log"
    run_env = {**(env or {}), **fault_vars}
    proc = start(*ONE_AT_A_TIME, *args, "--name", "x", log=log, env=run_env)
    try:
        code = proc.wait(timeout=600)
    finally:
        reap(proc)
    assert code == exit_code, log.read_text()[-4000:]
    return tmp_path / "x", fault_plugin.fired(plan), run_env


def attempts(rows: list[dict], *expected: list[int]) -> list[int]:
    """The worker pids of a trial's attempts, in result.json's order, asserting the epochs each one
    reported were `expected` (one list per attempt)."""
    out: list[tuple[int, list[int]]] = []
    for row in rows:
        if out and out[-1][0] == row["pid"]:
            out[-1][1].append(row["epoch"])
        else:
            out.append((row["pid"], [row["epoch"]]))
    assert [epochs for _, epochs in out] == list(expected), out
    return [pid for pid, _ in out]


def checkpoints(trial_dir: Path) -> dict[str, int]:
    """{checkpoint folder: the epoch its state.json holds} of a trial's folder on the storage."""
    return {
        p.parent.name: json.loads(p.read_text())["epoch"] for p in sorted(trial_dir.glob("checkpoint_*/state.json"))
    }


def assert_complete(exp: Path, max_epochs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every trial completed its budget with a test accuracy, each epoch once; the study agrees."""
    trials, epochs = tables(exp)
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "epochs_completed", "error"]]
    assert (trials["epochs_completed"] == max_epochs).all() and trials["test_accuracy"].notna().all()
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert_study_matches(exp, trials)
    return trials, epochs


def test_killed_after_a_report_and_its_checkpoint_the_trial_keeps_every_row(tmp_path):
    """Issue 24's lost row, reproduced: report 3 and checkpoint 3 are registered, the driver's result.json
    holds epochs 1-3 and the storage's copy 1-2 (synced by the snapshot checkpoint 2 forced). The retry
    restores checkpoint 3; Tune's own JSON logger then copied the storage's copy over the driver's, and
    the table lacked epoch 3 and called the trial 'stopped' at 3 epochs, with no test accuracy."""
    exp, fired, _ = run(tmp_path, [{"at": "report_done", "epoch": 3}], "--num-samples", "1", "--max-epochs", "4")
    assert [(f["at"], f["epoch"]) for f in fired] == [("report_done", 3)]
    ((trial, rows),) = reports(exp).items()
    first, second = attempts(rows, [1, 2, 3], [4])
    assert first == fired[0]["pid"] and rows[-1]["iterations_since_restore"] == 1  # from checkpoint 3
    trials, epochs = assert_complete(exp, max_epochs=4)
    assert list(epochs["epoch"]) == [1, 2, 3, 4]
    assert checkpoints(exp / "search" / trial) == {"checkpoint_000002": 3, "checkpoint_000003": 4}


def test_killed_during_the_first_epoch_the_trial_starts_over_once(tmp_path):
    """Nothing reported, no checkpoint: the retry trains from scratch in a new worker, and the trial is
    still one trial (one row, one Optuna trial), not a second one."""
    exp, fired, _ = run(tmp_path, [{"at": "mid_epoch", "epoch": 1}], "--num-samples", "1", "--max-epochs", "2")
    ((trial, rows),) = reports(exp).items()
    (pid,) = attempts(rows, [1, 2])
    assert pid != fired[0]["pid"], "the killed worker reported nothing; the new one every epoch"
    assert rows[0]["iterations_since_restore"] == 1
    assert_complete(exp, max_epochs=2)
    assert checkpoints(exp / "search" / trial) == {"checkpoint_000000": 1, "checkpoint_000001": 2}


def test_killed_with_its_checkpoint_on_the_storage_but_unreported_the_trial_goes_back_one(tmp_path):
    """Checkpoint 2's files are on the storage, its report never reached the driver: Tune never registered
    it, so the retry restores checkpoint 1 and trains epoch 2 again; epoch 2 is reported once."""
    exp, fired, _ = run(tmp_path, [{"at": "checkpoint_saved", "epoch": 2}], "--num-samples", "1", "--max-epochs", "3")
    ((trial, rows),) = reports(exp).items()
    first, second = attempts(rows, [1], [2, 3])
    assert first == fired[0]["pid"] and rows[1]["iterations_since_restore"] == 1  # from checkpoint 1
    assert_complete(exp, max_epochs=3)
    # The retry's checkpoint of epoch 2 replaced the one the killed worker left at the same index.
    assert checkpoints(exp / "search" / trial) == {"checkpoint_000001": 2, "checkpoint_000002": 3}


def test_killed_between_a_report_and_its_checkpoint_the_replayed_epoch_is_one_row_the_later(tmp_path):
    """The driver logged report 2 and asked for its checkpoint, which it never registered: the retry
    restores checkpoint 1 and reports epoch 2 again. The table holds epoch 2 once, the later report,
    whose weights epoch 3 was trained from; the study has each epoch once."""
    exp, fired, _ = run(tmp_path, [{"at": "report_received", "epoch": 2}], "--num-samples", "1", "--max-epochs", "3")
    ((trial, rows),) = reports(exp).items()
    first, second = attempts(rows, [1, 2], [2, 3])
    assert first == fired[0]["pid"] and rows[2]["iterations_since_restore"] == 1  # from checkpoint 1
    _, epochs = assert_complete(exp, max_epochs=3)
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs.set_index("epoch").loc[2, "val_accuracy"] == rows[2]["val_accuracy"]
    assert checkpoints(exp / "search" / trial) == {"checkpoint_000001": 2, "checkpoint_000002": 3}


def test_a_reused_worker_killed_after_its_new_trials_report_leaves_the_earlier_trial_whole(tmp_path):
    """Two trials in one worker (Tune reuses it): the second trial's worker is killed after its report
    1 and checkpoint; the second continues from checkpoint 1 in a new worker, the first is untouched."""
    faults = [{"at": "report_done", "epoch": 1, "reused": True}]
    exp, fired, _ = run(tmp_path, faults, "--num-samples", "2", "--max-epochs", "2")
    ((hit,),) = [fired]
    earlier, victim = hit["trials_here"]
    assert hit["trial_id"] == victim != earlier
    by_trial = reports(exp)
    assert attempts(by_trial[earlier], [1, 2]) == [hit["pid"]]  # ran whole in the worker later killed
    killed, _ = attempts(by_trial[victim], [1], [2])
    assert killed == hit["pid"] and by_trial[victim][1]["iterations_since_restore"] == 1
    assert_complete(exp, max_epochs=2)
    for trial in (earlier, victim):
        assert checkpoints(exp / "search" / trial) == {"checkpoint_000000": 1, "checkpoint_000001": 2}


def test_a_driver_killed_right_after_a_trial_ended_resumes_without_loss_or_a_second_study_trial(tmp_path):
    """The driver dies as the next trial starts in the first one's worker: the first has ended (Optuna
    told COMPLETE) but Tune's last snapshot (forced at its checkpoint 2) still has it running at
    checkpoint 2. --resume restores that and trains the last epoch again (the documented window); the
    trial keeps one row per epoch, its test accuracy, and one COMPLETE Optuna trial."""
    faults = [{"at": "trial_start", "reused": True, "do": "kill_driver"}]
    exp, fired, env = run(tmp_path, faults, "--num-samples", "2", "--max-epochs", "3", exit_code=-9)
    ((hit,),) = [fired]
    ended, _ = hit["trials_here"]
    # The moment: the study has the trial COMPLETE, Tune's snapshot does not have it ended, and the
    # storage's result.json is the copy synced with that snapshot.
    assert optuna_trials(exp)[ended] == ("COMPLETE", [1, 2, 3])
    assert ended not in terminated_in_snapshot(exp)
    assert [r["epoch"] for r in reports(exp)[ended]] == [1, 2]
    resume_to_end(tmp_path, timeout=600, env=env)
    after = reports(exp)
    _, retrained = attempts(after[ended], [1, 2], [3])
    assert retrained != hit["pid"] and after[ended][2]["iterations_since_restore"] == 1  # from checkpoint 2
    trials, _ = assert_complete(exp, max_epochs=3)
    assert len(trials) == 2 and set(after) == set(trials["trial_id"])
    assert checkpoints(exp / "search" / ended) == {"checkpoint_000001": 2, "checkpoint_000002": 3}


def test_a_kill_after_a_checkpointed_report_loses_no_row_with_s3_storage(s3_server, tmp_path, monkeypatch):
    """The first test's moment with the experiment in a bucket: the storage's copy of result.json is an
    object, read through the storage's filesystem."""
    from analysis.tables import read_table

    endpoint, env, fs = s3_server
    uri = f"s3://{BUCKET}/faults"
    args = ("--num-samples", "1", "--max-epochs", "4", "--storage-path", uri, "--s3-endpoint", endpoint)
    _, fired, _ = run(tmp_path, [{"at": "report_done", "epoch": 3}], *args, env=env)
    assert [(f["at"], f["epoch"]) for f in fired] == [("report_done", 3)]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    trials, epochs = read_table(f"{uri}/x", "trials"), read_table(f"{uri}/x", "epochs")
    assert list(epochs["epoch"]) == [1, 2, 3, 4]
    assert list(trials["status"]) == ["completed"] and trials["test_accuracy"].notna().all()
    (trial,) = trials["trial_id"]
    with fs.open_input_stream(f"{BUCKET}/faults/x/search/{trial}/result.json") as f:
        rows = [json.loads(line) for line in f.read().decode().splitlines()]
    assert [(r["epoch"], r["pid"] == fired[0]["pid"]) for r in rows] == [(1, True), (2, True), (3, True), (4, False)]
