"""Faults during a real search (digits, 1-3 trials, 2-3 epochs): a worker killed mid-epoch, Ctrl-C,
a driver killed outright, then --resume. Nothing finished is lost, re-run or duplicated. Then chaos:
trial workers killed at random throughout an ASHA sweep, and a driver killed again and again."""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def start(*args: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """run_search.py in its own session, so its Ray processes can be cleaned up as a group (and a fault
    plugin's kill_driver finds it as the session leader). `env`: added to this process's environment."""
    out = open(log, "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "run_search.py"), *args],
        cwd=PROJECT,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def resume_to_end(tmp_path: Path, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_search.py --resume` of experiment `x` in `tmp_path`, run to its end; asserts it succeeded."""
    done = subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), "--resume", "--name", "x", "--storage-path", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


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


def session_processes(session: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process in session `session`. A run started by `start` leads its
    own session, which its embedded Ray (GCS, raylet, workers) inherits: Ray puts each worker in a
    process group of its own, but not in a session of its own. So this names the run's processes and
    no other Ray's on the machine."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile
        out.append((int(entry.name), cmdline))
    return out


def reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a run (Ray's own processes after a killed driver): its process group, and
    the workers that Ray moved to process groups of their own within the run's session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid, _ in session_processes(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
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
    resume = resume_to_end(tmp_path, timeout=900)
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
CHAOS_TRIALS, CHAOS_KILLS = 16, 5  # 16: on an idle machine 12 trials could end before the 5th kill


def trial_workers(session: int) -> list[int]:
    """Ray worker processes of run `session` that are running a trial (Ray titles a function
    trainable's actor `ray::ImplicitFunc`, `.train` while it trains)."""
    return [pid for pid, cmd in session_processes(session) if cmd.startswith("ray::ImplicitFunc.train")]


def optuna_trials(exp: Path) -> dict[str, tuple[str, list[int]]]:
    """{Tune trial id: (Optuna state name, steps of its intermediate values)} of the experiment's study, from
    its journal (the driver's OptunaStudy), linked by the `trial_id` user attribute. A trial Optuna was
    asked for just before a driver was killed, and which Tune never ran, is told FAIL as such on resume
    and left out here."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    study = optuna.load_study(study_name=exp.name, storage=journal)
    ran = [t for t in study.trials if "never run" not in t.user_attrs.get("error", "")]
    ids = [t.user_attrs.get("trial_id") for t in ran]
    assert None not in ids and len(set(ids)) == len(ids), f"study trials without one Tune trial each: {ids}"
    return {t.user_attrs["trial_id"]: (t.state.name, sorted(t.intermediate_values)) for t in ran}


def assert_study_matches(exp: Path, trials: pd.DataFrame) -> None:
    """One Optuna trial per Tune trial, in the state the table gives it, told each epoch exactly once."""
    study = optuna_trials(exp)
    assert set(study) == set(trials["trial_id"])
    expected = {"completed": "COMPLETE", "stopped": "PRUNED", "error": "FAIL"}
    for row in trials.itertuples():
        state, steps = study[row.trial_id]
        assert state == expected[row.status], (row.trial_id, row.status, state)
        assert steps == list(range(1, row.epochs_completed + 1)), (row.trial_id, steps)


@pytest.mark.timeout(600)
def test_trial_workers_killed_at_random_throughout_an_asha_sweep(tmp_path):
    """Tune's chaos release test, in small: SIGKILL a trial worker CHAOS_KILLS times, 0.5-2 s apart at
    least, each just after it reported an epoch, while CHAOS_TRIALS trials run under ASHA."""
    rng = random.Random()
    exp, log = tmp_path / "x", tmp_path / "log"
    proc = start(
        *CHAOS,
        "--num-samples",
        str(CHAOS_TRIALS),
        "--max-failures",
        str(CHAOS_KILLS),  # a trial may take every kill: it is still retried
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
        log=log,
    )
    killed: list[int] = []
    try:
        wait_for(lambda: any(rows for rows in reports(exp).values()), proc, log)
        seen: set[tuple[str, int]] = set()  # (trial, row) already looked at
        next_kill = time.monotonic()
        while len(killed) < CHAOS_KILLS and proc.poll() is None:
            time.sleep(0.1)
            now = reports(exp)
            new = [r for t, rows in now.items() for i, r in enumerate(rows) if (t, i) not in seen]
            seen |= {(t, i) for t, rows in now.items() for i in range(len(rows))}
            if time.monotonic() < next_kill:
                continue
            # A worker that has just reported an epoch short of the budget: it trains the trial's next
            # epoch (its retry restores the checkpoint just made) or, ASHA having stopped the trial, is
            # being reused for another. A worker still in its first epoch could be killed again and again.
            live = set(trial_workers(proc.pid))
            victims = sorted({r["pid"] for r in new if r.get("epoch", CHAOS_EPOCHS) < CHAOS_EPOCHS} & live)
            if victims:
                victim = rng.choice(victims)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                next_kill = time.monotonic() + rng.uniform(0.5, 2.0)
        code = proc.wait(timeout=480)
    finally:
        reap(proc)
    assert len(killed) == CHAOS_KILLS, f"the sweep ended after {len(killed)} kills:\n{log.read_text()[-3000:]}"
    assert code == 0, log.read_text()[-4000:]
    # Tune recorded the kills as failures of the trials they hit (one may land as an attempt ends).
    failures = sum(p.read_text().count("Failure #") for p in (exp / "search").glob("*/error.txt"))
    assert failures >= CHAOS_KILLS - 1, f"{failures} failures recorded for {CHAOS_KILLS} kills"
    restarts = [r for rows in reports(exp).values() for r in rows if r["iterations_since_restore"] == 1]
    assert any(r["epoch"] > 1 for r in restarts), "no killed trial went on from its checkpoint"

    trials, epochs = tables(exp)
    assert len(trials) == CHAOS_TRIALS
    assert set(trials["status"]) <= {"completed", "stopped"}, trials[["trial_id", "status", "error"]]
    assert trials["error"].isna().all()
    assert (trials["status"] == "stopped").any(), "ASHA stopped no trial: the sweep did not exercise it"
    assert_one_row_per_trial_and_epoch(trials, epochs)
    assert_study_matches(exp, trials)


def terminated_in_snapshot(exp: Path, phase: str = "search") -> set[str]:
    """Trials Tune's last experiment-state snapshot records as TERMINATED: what a --resume keeps as finished."""
    done: set[str] = set()
    for state_file in glob.glob(str(exp / phase / "experiment_state-*.json")):
        try:
            state = json.loads(Path(state_file).read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being replaced
        for trial_json, _ in state.get("trial_data", []):
            trial = json.loads(trial_json)
            if trial.get("status") == "TERMINATED":
                done.add(trial["trial_id"])
    return done


DRIVER_KILLS = 3
DRIVER_KILL_TRIALS = 10  # enough that the last resume is still running at the third kill on an idle machine


@pytest.mark.timeout(900)
def test_a_driver_killed_again_and_again_resumes_without_loss_or_rerun(tmp_path):
    """Tune's driver-restore stress test, in small: SIGKILL the driver at DRIVER_KILLS random moments of
    one ASHA sweep, each after the run (or its resume) has made progress, and --resume after each."""
    rng = random.Random()
    exp = tmp_path / "x"
    first = (*CHAOS, "--num-samples", str(DRIVER_KILL_TRIALS), "--storage-path", str(tmp_path), "--name", "x")
    resume = ("--resume", "--name", "x", "--storage-path", str(tmp_path))
    finished_at_kill: dict[str, list[dict]] = {}  # trial folder -> its reports when it was known finished
    for attempt in range(DRIVER_KILLS):
        log = tmp_path / f"log{attempt}"
        before = sum(len(rows) for rows in reports(exp).values())
        proc = start(*(resume if attempt else first), log=log)
        try:
            wait_for(lambda: sum(len(rows) for rows in reports(exp).values()) > before, proc, log)  # noqa: B023
            time.sleep(rng.uniform(0.0, 1.5))
            assert proc.poll() is None, f"the run ended before kill {attempt + 1}:\n{log.read_text()[-3000:]}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            reap(proc)
        now = reports(exp)
        full = {t for t, rows in now.items() if any(r.get("epoch") == CHAOS_EPOCHS for r in rows)}
        for trial in (terminated_in_snapshot(exp) | full) - set(finished_at_kill):
            finished_at_kill[trial] = now.get(trial, [])
    resume_to_end(tmp_path, timeout=600)
    trials, epochs = tables(exp)
    assert len(trials) == DRIVER_KILL_TRIALS, trials[["trial_id", "status", "epochs_completed"]]
    assert set(trials["status"]) <= {"completed", "stopped"}, trials[["trial_id", "status", "error"]]
    assert_one_row_per_trial_and_epoch(trials, epochs)
    after = reports(exp)
    assert finished_at_kill, "no trial had finished by the last kill: nothing to check"
    for trial, rows in finished_at_kill.items():  # never trained again: not one new report
        assert after[trial] == rows, trial
    assert_study_matches(exp, trials)
