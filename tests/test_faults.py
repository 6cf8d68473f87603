"""Faults during a real search (digits, 1-6 trials, 2-4 epochs): a worker killed mid-epoch, Ctrl-C,
a driver killed outright, then --resume. Nothing finished is lost, re-run or duplicated. Then chaos:
trial workers killed at moments of their progress drawn by a seeded RNG throughout an ASHA sweep, and a
driver killed again and again. The kills come from tests/fault_plugin.py, triggered by the trials' own
progress, never by the test's timers (tests/test_faults_moments.py: one dangerous moment per test)."""

import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import fault_plugin
from tests.search_runs import (
    FAULT_PLUGIN,
    PROJECT,
    SEARCH,
    assert_one_row_per_trial_and_epoch,
    assert_study_matches,
    fault_env,
    finished,
    reap,
    reports,
    resume_to_end,
    start,
    tables,
    terminated_in_snapshot,
    wait_for,
)

pytestmark = pytest.mark.slow


# Where the fault plugin kills at a moment of a trial's progress, BaseNet trials (about a second an epoch
# on digits) reach the same moments as SEARCH's, whose first draws are ConvNets of several seconds an
# epoch. The Ctrl-C and SIGTERM tests keep SEARCH: their signals race the trials' progress.
BY_PROGRESS = ("--space", "basenet", *SEARCH[2:])


def start_one_trial(tmp_path, env: dict | None = None, *args: str, search: tuple[str, ...] = SEARCH):
    """A one-trial, 3-epoch search in experiment `x`: (experiment folder, log, process)."""
    log = tmp_path / "log"
    proc = start(
        *search,
        *args,
        "--num-samples",
        "1",
        "--max-epochs",
        "3",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        log=log,
        env=env,
    )
    return tmp_path / "x", log, proc


def test_a_worker_killed_mid_epoch_is_retried_from_its_checkpoint(tmp_path):
    """The trial's worker SIGKILLed while epoch 2 trains: the retry restores the epoch-1 checkpoint and
    goes on from epoch 2, not from scratch."""
    plan, env = fault_env(tmp_path, [{"at": "mid_epoch", "epoch": 2}])
    exp, log, proc = start_one_trial(tmp_path, env, "--plugin", str(FAULT_PLUGIN), search=BY_PROGRESS)
    try:
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        reap(proc)
    (hit,) = fault_plugin.fired(plan)
    (rows,) = reports(exp).values()
    assert [r["epoch"] for r in rows if r["pid"] == hit["pid"]] == [1]
    resumed = [r for r in rows if r["pid"] != hit["pid"]]
    assert [r["epoch"] for r in resumed] == [2, 3] and resumed[0]["iterations_since_restore"] == 1
    trials, epochs = tables(exp)
    assert list(trials["status"]) == ["completed"] and list(trials["epochs_completed"]) == [3]
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert_one_row_per_trial_and_epoch(trials, epochs)


# Trials of the interrupted search: enough that, with warm workers (a digits trial takes a second or
# two), some are still to run when the signal has been handled.
TRIALS = 6


def _interrupt_then_resume(
    tmp_path: Path, stop, faults: list[dict[str, Any]] | None = None
) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """Start TRIALS trials of 2 epochs one at a time, `stop` the driver once a trial has finished (or,
    with `faults`, let the fault plugin stop it), then --resume. Returns (the resume run, reports before
    the resume, reports after)."""
    exp = tmp_path / "x"
    log = tmp_path / "log"
    env: dict[str, str] = {}
    plugin: tuple[str, ...] = ()
    search = SEARCH
    if faults:
        _, env = fault_env(tmp_path, faults)
        plugin, search = ("--plugin", str(FAULT_PLUGIN)), BY_PROGRESS
    proc = start(
        *search,
        *plugin,
        "--num-samples",
        str(TRIALS),
        "--max-epochs",
        "2",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        log=log,
        env=env,
    )
    try:
        if not faults:
            wait_for(lambda: finished(exp, 2), proc, log)
        stop(proc, exp, log)
    finally:
        reap(proc)
    before = reports(exp)
    resume = resume_to_end(tmp_path, timeout=900, env=env)
    return resume, before, reports(exp)


def _assert_resumed_cleanly(tmp_path: Path, before: dict, after: dict) -> None:
    trials, epochs = tables(tmp_path / "x")
    assert len(trials) == TRIALS, trials[["trial_id", "status"]]
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert len(after) == TRIALS
    done_before = [t for t, rows in before.items() if any(r.get("epoch") == 2 for r in rows)]
    assert done_before
    for trial in done_before:  # not trained again: not one new report
        assert after[trial] == before[trial], trial


def test_sigint_exits_130_with_tables_then_resume_completes(tmp_path):
    def sigint(proc, exp, log):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()[-4000:]
        text = log.read_text()
        assert f"resume with: python run_search.py --resume --name x --storage-path {tmp_path}" in text
        trials, epochs = tables(exp)
        done = finished(exp, 2)
        assert set(done) <= set(trials["trial_id"])
        assert (trials.set_index("trial_id").loc[done, "status"] == "completed").all()
        assert_one_row_per_trial_and_epoch(trials, epochs)

    _, before, after = _interrupt_then_resume(tmp_path, sigint)
    _assert_resumed_cleanly(tmp_path, before, after)


def test_a_driver_killed_outright_then_resume_completes(tmp_path):
    def sigkill(proc, exp, log):
        assert proc.wait(timeout=600) == -signal.SIGKILL, log.read_text()[-4000:]
        reap(proc)
        assert (exp / "driver.lock").exists()  # the killed driver's lock, left behind: the resume takes it
        # The driver never wrote its tables; they are rebuilt from the experiment folder alone.
        assert not (exp / "tables").exists()
        rebuilt = subprocess.run(
            [sys.executable, "-m", "analysis", str(exp), "--rebuild-tables"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        trials, epochs = tables(exp)
        done = finished(exp, 2)
        assert (trials.set_index("trial_id").loc[done, "status"] == "completed").all()
        assert_one_row_per_trial_and_epoch(trials, epochs)
        # A searcher state cut short, as a kill mid-copy left it before tuning.atomic_storage: rebuilt, not lost.
        (state,) = (exp / "search").glob("searcher-state-*.pkl")
        state.write_bytes(b"")

    # The driver SIGKILLed as the second trial trains its first epoch, the first one finished.
    into_the_next_trial = [{"trial": 2, "at": "mid_epoch", "epoch": 1, "do": "kill_driver"}]
    resume, before, after = _interrupt_then_resume(tmp_path, sigkill, into_the_next_trial)
    assert "rebuilt from the Optuna study" in resume.stdout + resume.stderr
    _assert_resumed_cleanly(tmp_path, before, after)
    assert_study_matches(tmp_path / "x", tables(tmp_path / "x")[0])


def test_sigterm_exits_130_and_resume_continues_the_trial_from_its_checkpoint(tmp_path):
    exp, log, proc = start_one_trial(tmp_path)
    try:
        wait_for(lambda: any(r.get("epoch") == 1 for rows in reports(exp).values() for r in rows), proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 130, log.read_text()[-4000:]
    finally:
        reap(proc)
    assert "resume with: python run_search.py --resume --name x" in log.read_text()
    trials, epochs = tables(exp)
    assert len(trials) == 1 and 1 <= trials.loc[0, "epochs_completed"] < 3
    stopped_at = int(trials.loc[0, "epochs_completed"])

    resume_to_end(tmp_path, timeout=900)
    trials, epochs = tables(exp)
    assert list(trials["status"]) == ["completed"] and list(epochs["epoch"]) == [1, 2, 3]
    (rows,) = reports(exp).values()
    first_after = next(r for r in rows if r["epoch"] == stopped_at + 1)
    assert first_after["iterations_since_restore"] == 1  # continued from the checkpoint, not from scratch


# ---- chaos ------------------------------------------------------------------------------------------------

# A sweep of BaseNet trials (a digits epoch takes seconds) that ASHA stops at rungs 1 and 2 of 4 epochs.
CHAOS_EPOCHS = 4
CHAOS = ("--space", "basenet", "--dataset", "digits", "--scheduler", "asha", "--grace-period", "1")
CHAOS += ("--reduction-factor", "2", "--max-epochs", str(CHAOS_EPOCHS), "--max-concurrent", "2")
CHAOS_TRIALS, CHAOS_KILLS, CHAOS_SEED = 8, 6, 24
# Where a worker can die, by what the driver holds (tests/fault_plugin.py); trial_start is left out:
# a kill before anything of the trial ran is mid_epoch 1's case.
WORKER_MOMENTS = ("mid_epoch", "checkpoint_saved", "report_received", "report_done")


def chaos_plan(seed: int) -> list[dict[str, Any]]:
    """CHAOS_KILLS distinct (moment, epoch) kills drawn by a seeded RNG, one of them at epoch 1 in a
    reused worker. Every one is reached whatever the machine's speed: ASHA lets the first trial to reach
    a rung go on, so some trial reaches every epoch, and every trial trains epoch 1, some in reused
    workers."""
    rng = random.Random(seed)
    moments = [(at, epoch) for at in WORKER_MOMENTS for epoch in range(1, CHAOS_EPOCHS + 1)]
    faults = [{"at": at, "epoch": epoch} for at, epoch in rng.sample(moments, CHAOS_KILLS - 1)]
    return [*faults, {"at": rng.choice(WORKER_MOMENTS), "epoch": 1, "reused": True}]


@pytest.mark.timeout(600)
def test_trial_workers_killed_at_their_progress_throughout_an_asha_sweep(tmp_path):
    """Tune's chaos release test, in small, without its timers: CHAOS_KILLS trial workers SIGKILLed, each
    at a moment of a trial's progress the seeded plan names, while CHAOS_TRIALS trials run under ASHA
    two at a time in reused workers."""
    plan, env = fault_env(tmp_path, chaos_plan(CHAOS_SEED))
    exp, log = tmp_path / "x", tmp_path / "log"
    proc = start(
        *CHAOS,
        "--plugin",
        str(FAULT_PLUGIN),
        "--num-samples",
        str(CHAOS_TRIALS),
        "--max-failures",
        str(CHAOS_KILLS),  # a trial may take every kill: it is still retried
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        log=log,
        env=env,
    )
    try:
        code = proc.wait(timeout=540)
    finally:
        reap(proc)
    assert code == 0, log.read_text()[-4000:]
    hits = fault_plugin.fired(plan)
    assert [(h["at"], h["epoch"]) for h in hits] == [(f["at"], f["epoch"]) for f in chaos_plan(CHAOS_SEED)]
    assert len(hits[-1]["trials_here"]) >= 2, "the last kill was in a reused worker"
    # Tune recorded each kill as one failure of the trial it hit, and retried it.
    failures = {p.parent.name: p.read_text().count("Failure #") for p in (exp / "search").glob("*/error.txt")}
    assert sum(failures.values()) == CHAOS_KILLS and set(failures) == {h["trial_id"] for h in hits}
    restarts = [r for rows in reports(exp).values() for r in rows if r["iterations_since_restore"] == 1]
    assert any(r["epoch"] > 1 for r in restarts), "no killed trial went on from its checkpoint"

    trials, epochs = tables(exp)
    assert len(trials) == CHAOS_TRIALS
    assert set(trials["status"]) <= {"completed", "stopped"}, trials[["trial_id", "status", "error"]]
    assert trials["error"].isna().all()
    assert (trials["status"] == "stopped").any(), "ASHA stopped no trial: the sweep did not exercise it"
    full = trials["epochs_completed"] == CHAOS_EPOCHS
    assert ((trials["status"] == "completed") == full).all() and (trials["test_accuracy"].notna() == full).all()
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert_study_matches(exp, trials)


DRIVER_KILLS, DRIVER_KILL_TRIALS, DRIVER_KILL_EPOCHS, DRIVER_KILL_SEED = 3, 6, 2, 24


def driver_kill_plan(seed: int) -> list[dict[str, Any]]:
    """A driver kill in trials 2, 4 and 6 of the experiment, each at a moment of that trial drawn by a
    seeded RNG (its start in a reused worker, i.e. right after the trial before it ended, or any moment
    of its epochs)."""
    rng = random.Random(seed)
    moments = [("trial_start", None)]
    moments += [(at, epoch) for at in WORKER_MOMENTS for epoch in range(1, DRIVER_KILL_EPOCHS + 1)]
    faults = []
    for trial in (2, 4, 6):
        at, epoch = rng.choice(moments)
        fault = {"trial": trial, "at": at, "do": "kill_driver"}
        faults.append(fault | ({"epoch": epoch} if epoch else {}))
    return faults


@pytest.mark.timeout(900)
def test_a_driver_killed_again_and_again_resumes_without_loss_or_rerun(tmp_path):
    """Tune's driver-restore stress test, in small, without its timers: SIGKILL the driver at DRIVER_KILLS
    moments of one FIFO sweep (driver_kill_plan), each in a later trial, and --resume after each. One
    trial at a time, so the trials before the killed one have ended and Tune's snapshot (forced at each
    trial's second checkpoint) has those before the last as finished: they are never trained again."""
    plan, env = fault_env(tmp_path, driver_kill_plan(DRIVER_KILL_SEED))
    exp = tmp_path / "x"
    first = (*BY_PROGRESS, "--plugin", str(FAULT_PLUGIN), "--num-samples", str(DRIVER_KILL_TRIALS))
    first += ("--max-epochs", str(DRIVER_KILL_EPOCHS), "--storage-path", str(tmp_path), "--name", "x")
    resume = ("--resume", "--name", "x", "--storage-path", str(tmp_path))
    finished_at_kill: dict[str, list[dict]] = {}  # trial folder -> its reports when Tune had it finished
    for attempt in range(DRIVER_KILLS):
        log = tmp_path / f"log{attempt}"
        proc = start(*(resume if attempt else first), log=log, env=env)
        try:
            assert proc.wait(timeout=600) == -signal.SIGKILL, f"kill {attempt + 1} missed:\n{log.read_text()[-3000:]}"
        finally:
            reap(proc)
        assert len(fault_plugin.fired(plan)) == attempt + 1
        now = reports(exp)
        for trial in terminated_in_snapshot(exp) - set(finished_at_kill):
            finished_at_kill[trial] = now[trial]
    resume_to_end(tmp_path, timeout=600, env=env)
    hits = fault_plugin.fired(plan)
    assert [h["trial"] for h in hits] == [2, 4, 6]
    trials, epochs = tables(exp)
    assert len(trials) == DRIVER_KILL_TRIALS, trials[["trial_id", "status", "epochs_completed"]]
    assert (trials["status"] == "completed").all() and trials["test_accuracy"].notna().all()
    assert_one_row_per_trial_and_epoch(trials, epochs)
    after = reports(exp)
    assert len(finished_at_kill) >= 2, "by the last kill, at least trials 1 and 2 were finished in the snapshot"
    for trial, rows in finished_at_kill.items():  # never trained again: not one new report
        assert after[trial] == rows, trial
    assert_study_matches(exp, trials)
