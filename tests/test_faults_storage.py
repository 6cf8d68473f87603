"""Faults of the storage and of its sharing, on a real search (digits): the storage fills up mid-search,
and a second driver starts the experiment a first one is running. Nothing written is lost or torn, and
--resume completes the experiment."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.tables import export_tables
from experiment import lock, storage
from tests.search_runs import SEARCH, assert_one_row_per_trial_and_epoch, finished, reap, reports, start, wait_for

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def resume(storage: Path, name: str = "x", timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), "--resume", "--name", name, "--storage-path", str(storage)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB filesystem of its own (tmpfs; tests run as root), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs ({done.stderr.strip()}); this test needs root and mount(8)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the device has no space left."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == 28, e
    return filler


TRIALS, EPOCHS = 4, 1


def test_a_full_disk_stops_the_search_with_one_message_keeps_what_is_written_and_resume_completes(small_disk):
    exp, log = small_disk / "x", small_disk.parent / "log"
    proc = start(
        *SEARCH,
        *("--num-samples", str(TRIALS), "--max-epochs", str(EPOCHS)),
        *("--storage-path", str(small_disk), "--name", "x"),
        log=log,
    )
    try:
        wait_for(lambda: finished(exp, EPOCHS), proc, log)
        export_tables(exp)  # tables of what is finished, as a user's `python -m analysis` writes them
        before = {t: (exp / "tables" / t).read_bytes() for t in ("trials.parquet", "epochs.parquet")}
        filler = fill(small_disk)
        code = proc.wait(timeout=300)
    finally:
        reap(proc)
    text = log.read_text()
    assert code == 2, text[-4000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("run_search.py: error: --storage-path: no space left on the device holding "), last
    assert (
        f"holding {exp};" in last
        and f"resume with: python run_search.py --resume --name x --storage-path {small_disk}" in last
    )
    # What was written stays readable: the tables byte for byte (their rewrite failed on a temp file,
    # which is removed), experiment.json, every trial's parameters; no temp file is left behind.
    for name, data in before.items():
        assert (exp / "tables" / name).read_bytes() == data
        pq.read_table(exp / "tables" / name)
    assert json.loads((exp / "experiment.json").read_text())["num_samples"] == TRIALS
    for params in exp.glob("search/*/params.json"):
        json.loads(params.read_text())
    assert not [p for p in exp.rglob("*.tmp")]
    assert not (exp / "driver.lock").exists()  # released

    # --resume before any space is freed: the same one line (the driver's own records cannot be written).
    still_full = resume(small_disk)
    assert still_full.returncode == 2, still_full.stderr[-3000:]
    assert "Traceback" not in still_full.stderr
    assert still_full.stderr.strip().splitlines()[-1] == last
    assert not (exp / "driver.lock").exists()

    filler.unlink()
    resumed = resume(small_disk)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = pd.read_parquet(exp / "tables" / "trials.parquet")
    epochs = pd.read_parquet(exp / "tables" / "epochs.parquet")
    assert len(trials) == TRIALS and (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert (trials["epochs_completed"] == EPOCHS).all()
    assert_one_row_per_trial_and_epoch(trials, epochs)


def test_a_second_driver_is_refused_while_the_first_runs_and_a_killed_drivers_lock_blocks_nothing(tmp_path):
    exp, log = tmp_path / "x", tmp_path / "log"
    # A budget the driver does not reach: it is killed once the second driver has been refused.
    proc = start(
        *SEARCH, "--num-samples", "1", "--max-epochs", "50", "--storage-path", str(tmp_path), "--name", "x", log=log
    )
    try:
        wait_for(lambda: any(r.get("epoch") == 1 for rows in reports(exp).values() for r in rows), proc, log)
        holder = f"pid {proc.pid} on host {socket.gethostname()}, started 20"
        for argv in (("--resume", "--name", "x"), ("--space", "batchnorm", "--dataset", "digits", "--name", "x")):
            second = subprocess.run(
                [sys.executable, str(PROJECT / "run_search.py"), *argv, "--storage-path", str(tmp_path)],
                cwd=PROJECT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert second.returncode == 2, second.stderr[-3000:]
            assert f"experiment {exp} is in use by another driver ({holder}" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
            assert proc.poll() is None, "the first driver must still be running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        reap(proc)
    # The killed driver's lock file is left behind, and blocks nothing: the kernel dropped the lock with
    # the driver (tests/test_faults.py resumes an experiment whose driver was killed, through it).
    assert json.loads((exp / lock.LOCK_FILE).read_text())["pid"] == proc.pid
    fs, path = storage.resolve(exp)
    with lock.acquire(fs, path, str(exp)):
        pass
