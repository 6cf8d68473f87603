"""Helpers for tests that drive run_search.py in a process of its own and read what it recorded: start a
run in its own session, wait on its progress, reap what is left of it, resume it, and check the tables,
the Optuna study and Tune's snapshot against each other. Shared by the fault, cluster and racing tests."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests import fault_plugin

PROJECT = Path(__file__).resolve().parents[1]
FAULT_PLUGIN = PROJECT / "tests" / "fault_plugin.py"
# Tune's periodic experiment snapshot is a timer (every >= 10 s). Off, a snapshot (which is also what
# syncs the driver's result.json files to the storage) is taken when a run starts, when a trial has
# made 2 checkpoints since the last one (--keep-checkpoints 2 forces it) and when the run ends: what
# the storage holds at a kill follows from progress alone.
NO_PERIODIC_SNAPSHOT = {"TUNE_GLOBAL_CHECKPOINT_S": "1000000000"}


def fault_env(tmp_path: Path, faults: list[dict[str, Any]]) -> tuple[Path, dict[str, str]]:
    """(plan file, environment of a run that loads the fault plugin with that plan); the run's command
    line also needs `--plugin FAULT_PLUGIN` (experiment.json keeps it for --resume)."""
    plan = fault_plugin.write_plan(tmp_path / "plan.json", faults)
    return plan, {fault_plugin.PLAN_ENV: str(plan), **NO_PERIODIC_SNAPSHOT}


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
