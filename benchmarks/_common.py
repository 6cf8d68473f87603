"""Shared helpers of the benchmark scripts: where the data is, how run_search.py is run, tables out.

Every benchmark prints a table and writes it to benchmarks/results/<name>.csv (or to --out).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = PROJECT / ".." / "shared" / "data"  # the real CIFAR-100 (read-only, never copied)
if str(PROJECT) not in sys.path:  # the scripts run as `python benchmarks/x.py` from the project root
    sys.path.insert(0, str(PROJECT))


def cifar_available() -> bool:
    return (SHARED_DATA / "cifar-100-python" / "train").is_file()


def pick_dataset(quick: bool, force: str | None = None) -> tuple[str, str | None]:
    """(dataset name, --data-dir): CIFAR-100 classes 0..24 from ../shared/data when present and not
    --quick, else the bundled digits."""
    if force:
        return force, (str(SHARED_DATA) if force.startswith("cifar") else None)
    if not quick and cifar_available():
        return "cifar100_25", str(SHARED_DATA)
    return "digits", None


def load(dataset: str, data_dir: str | None):
    from trainables.data import load_dataset

    return load_dataset(dataset, data_dir)


def machine() -> dict[str, Any]:
    """Where and when a figure was taken; the load average says whether others were running."""
    load1, load5, _ = os.getloadavg()
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_1m": round(load1, 2),
        "loadavg_5m": round(load5, 2),
    }


def run_search(
    args: list[str], storage: Path, name: str, timeout: float = 3600, env: dict[str, str] | None = None
) -> tuple[float, Path]:
    """run_search.py in its own process, as a user runs it; (wall seconds, experiment folder).
    Raises with run_search's stderr when it fails."""
    cmd = [sys.executable, str(PROJECT / "run_search.py"), *args, "--storage-path", str(storage), "--name", name, "-q"]
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=PROJECT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(
            f"run_search.py {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}"
        )
    return wall, storage / name


def start_ray(attempts: int = 3, **options: Any) -> float:
    """ray.init(address="local", ...) as the benchmarks start Ray; seconds it took. Ray gives its raylet
    a fixed 30 s to register, which a heavily loaded shared machine can exceed: then it tries again."""
    import ray

    started = time.perf_counter()
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING", **options)
            return time.perf_counter() - started
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == attempts:
                raise
            print(f"ray.init timed out (machine load {os.getloadavg()[0]:.0f}); trying again", file=sys.stderr)
            ray.shutdown()
    raise AssertionError("unreachable")


def tables(experiment: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from analysis.tables import read_table

    return read_table(experiment, "trials"), read_table(experiment, "epochs")


def result_rows(experiment: Path, phase: str = "search") -> dict[str, list[dict[str, Any]]]:
    """Ray Tune's raw per-epoch reports (result.json) of every trial: trial folder name -> rows.
    They carry Ray's own clocks (timestamp, time_this_iter_s, time_total_s) the tables leave out."""
    out = {}
    for trial_dir in sorted((experiment / phase).iterdir()):
        path = trial_dir / "result.json"
        if path.is_file():
            out[trial_dir.name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def emit(name: str, frame: pd.DataFrame, out: Path | None = None, title: str | None = None) -> Path:
    """Print the table and write it as CSV beside the scripts (benchmarks/results/<name>.csv)."""
    path = Path(out) if out else RESULTS / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 40):
        print(f"\n== {title or name} ==")
        print(frame.to_string(index=False))
    print(f"-> {path}")
    return path


def scratch(name: str, keep: Path | None = None) -> Path:
    """A folder for a benchmark's experiments (under --workdir, default /tmp): results of searches
    are big and never go under benchmarks/results."""
    base = Path(keep) if keep else Path(os.environ.get("TMPDIR", "/tmp")) / "keras-hpo-bench"
    folder = base / f"{name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
