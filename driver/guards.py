"""What keeps an experiment whole while the driver runs it: its lock (one driver at a time), the check
that a resumed one can be resumed, a full storage turned into one line instead of a traceback, and the
tables written whatever stopped the run (the report, derived from them, never costs them)."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from analysis.tables import export_tables
from experiment import lock, storage
from experiment.errors import UsageError
from experiment.folder import Experiment, read_record
from tuning.atomic_storage import cut_short_state


def check_free(exp: Experiment) -> None:
    """Refuse an experiment another driver is running (experiment.lock); writes nothing."""
    try:
        lock.check(exp.fs, exp.path, exp.uri)
    except lock.LockHeld as e:
        raise UsageError(str(e)) from None


@contextmanager
def hold_experiment(exp: Experiment, resume: bool) -> Iterator[None]:
    """Hold the experiment's lock while the block runs, or refuse: another driver has it."""
    try:
        held = lock.acquire(exp.fs, exp.path, exp.uri)
    except lock.LockHeld as e:
        raise UsageError(str(e)) from None
    with held:
        if not resume and exp.exists(storage.EXPERIMENT_FILE):
            # another driver started and finished this name since the driver's first check
            raise UsageError(
                f"experiment {exp.uri} already exists; pick another --name, or add --resume to continue it"
            )
        yield


def read_resumable(exp: Experiment) -> dict[str, Any]:
    """The record of an experiment --resume can continue; a clear refusal otherwise."""
    if not exp.exists(storage.EXPERIMENT_FILE):
        raise UsageError(
            f"--resume: no experiment {exp.uri} (no {storage.EXPERIMENT_FILE}); check --name "
            "and --storage-path, or drop --resume to start a new one"
        )
    if not exp.exists("search", "tuner.pkl"):
        raise UsageError(
            f"--resume: {exp.uri} stopped before its search started, so there is nothing to "
            "resume; start it again under a new --name"
        )
    for phase in storage.list_dirs(exp.fs, exp.path):
        for path in cut_short_state(exp.fs, phase):
            raise UsageError(
                f"--resume: Tune's state file {path} is cut short (a driver killed while copying it to the "
                "storage); resuming would run that phase's trials again from scratch. Start the experiment "
                "again under a new --name (its tables stay readable: python -m analysis)"
            )
    return read_record(exp)


def is_storage_full(e: BaseException) -> bool:
    """ENOSPC, or Tune's TuneError around the StorageFull its callback raised (Tune wraps a callback's
    exception, which stays reachable as the wrapper's context)."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def storage_full_stops(exp: Experiment, hint: str) -> Iterator[None]:
    """A full --storage-path (a trial's checkpoint, the driver's own records) stops the experiment with one
    line naming it: what is already there stays readable (tables are written to a temp file, then renamed),
    and --resume continues once there is space."""
    try:
        yield
    except Exception as e:
        if not is_storage_full(e):
            raise
        raise UsageError(
            f"--storage-path: no space left on the device holding {exp.uri}; the search stopped, and what it "
            f"wrote so far is intact. Free space there, then resume with: {hint}"
        ) from None


def export_best_effort(exp_uri: str) -> None:
    try:
        tables_folder, trials, _ = export_tables(exp_uri)
        print(f"tables for the {trials.num_rows} trials so far: {tables_folder}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - never hide the original failure behind this one
        if is_storage_full(e):
            return  # the caller's message says so, once
        print(f"run_search.py: could not write the tables ({e}); rebuild them later from {exp_uri}", file=sys.stderr)


def write_report(exp_uri: str) -> None:
    """The report (analysis.report) from the tables just written; a failure here never costs the tables
    or changes the exit code: `python -m analysis EXPERIMENT_DIR` rebuilds it."""
    try:
        from analysis.report import answer_lines, build_report

        result = build_report(exp_uri)
        print(f"report: {result['folder']}/report.md")
        print("\n".join(answer_lines(result)))
    except Exception as e:  # noqa: BLE001 - the search's result is the tables; the report is derived
        print(
            f"run_search.py: warning: report not written ({type(e).__name__}: {e}); "
            f"rebuild it with: python -m analysis {exp_uri}",
            file=sys.stderr,
        )
