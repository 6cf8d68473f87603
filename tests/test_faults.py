"""Faults during a real search (digits, 1-3 trials, 2-3 epochs): a worker killed mid-epoch, Ctrl-C,
a driver killed outright, then --resume. Nothing finished is lost, re-run or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def start(*args: str, log: Path) -> subprocess.Popen:
    """run_search.py in its own session, so its Ray processes can be cleaned up as a group."""
    out = open(log, "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "run_search.py"), *args],
        cwd=PROJECT,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def reports(exp: Path) -> dict[str, list[dict]]:
    """Every trial's reported rows (result.json), by trial folder."""
    out = {}
    for result in sorted((exp / "search").glob("*/result.json")):
        rows = []
        for line in result.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # being written
        out[result.parent.name] = rows
    return out


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"run_search.py exited {proc.returncode} too early:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"timed out:\n{log.read_text()[-4000:]}")


def finished(exp: Path, max_epochs: int) -> list[str]:
    return [t for t, rows in reports(exp).items() if any(r.get("epoch") == max_epochs for r in rows)]


def reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a run's process group (Ray's own processes after a killed driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tables(exp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(exp / "tables" / "trials.parquet"), pd.read_parquet(exp / "tables" / "epochs.parquet")


def assert_one_row_per_trial_and_epoch(trials: pd.DataFrame, epochs: pd.DataFrame) -> None:
    assert trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, group in epochs.groupby("trial_id"):
        assert sorted(group["epoch"]) == list(range(1, len(group) + 1)), f"gap in {trial_id}"
    done = trials.set_index("trial_id")["epochs_completed"]
    assert (epochs.groupby("trial_id").size() == done[done > 0]).all()


SEARCH = ("--space", "batchnorm", "--dataset", "digits", "--scheduler", "fifo", "--max-concurrent", "1")


def start_one_trial(tmp_path):
    """A one-trial, 3-epoch search in experiment `x`: (experiment folder, log, process)."""
    log = tmp_path / "log"
    proc = start(
        *SEARCH, "--num-samples", "1", "--max-epochs", "3", "--storage-path", str(tmp_path), "--name", "x", log=log
    )
    return tmp_path / "x", log, proc


def test_a_worker_killed_mid_epoch_is_retried_from_its_checkpoint(tmp_path):
    exp, log, proc = start_one_trial(tmp_path)
    try:
        first = wait_for(
            lambda: next((r for rows in reports(exp).values() for r in rows if r.get("epoch") == 1), None), proc, log
        )
        os.kill(first["pid"], signal.SIGKILL)  # the trial's worker, while epoch 2 trains
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        reap(proc)
    (rows,) = reports(exp).values()
    pids = {r["pid"] for r in rows if "pid" in r}
    assert len(pids) == 2, "a second worker process took over"
    resumed = [r for r in rows if r["pid"] != first["pid"]]
    # The kill lands in epoch 2, or (a warm, fast worker) in epoch 3: the retry restores the checkpoint
    # of the last epoch the killed worker reported and goes on from the next one, not from scratch.
    killed_last = max(r["epoch"] for r in rows if r.get("pid") == first["pid"] and "epoch" in r)
    assert killed_last < 3, "the kill came after the last epoch: nothing was retried"
    assert resumed[0]["epoch"] == killed_last + 1 and resumed[0]["iterations_since_restore"] == 1, (
        f"the retry did not continue from the epoch-{killed_last} checkpoint: {resumed[0]}"
    )
    trials, epochs = tables(exp)
    assert list(trials["status"]) == ["completed"] and list(trials["epochs_completed"]) == [3]
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert_one_row_per_trial_and_epoch(trials, epochs)


# Trials of the interrupted search: enough that, with warm workers (a digits trial takes a second or
# two), some are still to run when the signal has been handled.
TRIALS = 6


def _interrupt_then_resume(tmp_path: Path, stop) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """Start TRIALS trials of 2 epochs one at a time, `stop` the driver once a trial has finished,
    then --resume. Returns (the resume run, reports before the resume, reports after)."""
    exp = tmp_path / "x"
    log = tmp_path / "log"
    proc = start(
        *SEARCH,
        "--num-samples",
        str(TRIALS),
        "--max-epochs",
        "2",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        log=log,
    )
    try:
        wait_for(lambda: finished(exp, 2), proc, log)
        stop(proc, exp, log)
    finally:
        reap(proc)
    before = reports(exp)
    resume = subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), "--resume", "--name", "x", "--storage-path", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
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
        time.sleep(1.0)  # into the next trial
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
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

    _, before, after = _interrupt_then_resume(tmp_path, sigkill)
    _assert_resumed_cleanly(tmp_path, before, after)


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

    resume = subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), "--resume", "--name", "x", "--storage-path", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    trials, epochs = tables(exp)
    assert list(trials["status"]) == ["completed"] and list(epochs["epoch"]) == [1, 2, 3]
    (rows,) = reports(exp).values()
    first_after = next(r for r in rows if r["epoch"] == stopped_at + 1)
    assert first_after["iterations_since_restore"] == 1  # continued from the checkpoint, not from scratch
