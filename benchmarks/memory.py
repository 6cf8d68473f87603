#!/usr/bin/env python
"""Memory: peak memory of a session with 1 and with 2 concurrent trials, and what of the second trial's
memory is attributable to the dataset (the dataset is shared through Ray's object store, not copied).

    .venv/bin/python benchmarks/memory.py            # CIFAR-100 0..24 vs digits, 1 and 2 concurrent trials
    .venv/bin/python benchmarks/memory.py --quick    # digits only, 2 concurrent trials, 1 epoch

Method. Each session is `run_search.py --space basenet --search random --scheduler fifo --max-epochs 1`
with --num-samples = --max-concurrent = K (1 or 2). While it runs, psutil samples every process of its
tree (driver, raylet with the object store, GCS, workers) every --interval seconds:
- session PSS: the sum of proportional set sizes (shared pages divided among their users), peak over
  samples: the memory the session holds on the machine;
- per trial process (found by the `pid` each trial reports): peak USS, memory only that process holds.
A second TensorFlow process costs hundreds of MB of runtime whatever the data, so the figure the target
is about is the data-attributable part: the same sessions on digits (5.5 MB, same model but 10 classes)
give the data-independent baseline, and
    data-attributable growth by the 2nd trial = (PSS[cifar, 2] - PSS[cifar, 1]) - (PSS[digits, 2] - PSS[digits, 1])
    data-attributable private memory of a trial = USS[cifar trial] - USS[digits trial]  (mean over trials)
Target: the second trial adds less than half the dataset's size (dataset = x/y of train and test, uint8).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "memory"
MB = 2**20


def sample_tree(root: psutil.Process, interval: float, stop: threading.Event, out: list[dict]) -> None:
    """Append {t, pss_total, uss: {pid: uss}} for root and its descendants until stop is set."""
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total_pss, uss = 0, {}
        for proc in procs:
            try:
                mem = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total_pss += mem.pss
            uss[proc.pid] = mem.uss
        out.append({"t": time.monotonic(), "pss_total": total_pss, "uss": uss})
        stop.wait(interval)


def session(concurrent: int, dataset: str, data_dir: str | None, work: Path, interval: float, epochs: int) -> dict:
    name = f"{dataset}-c{concurrent}"
    cmd = [
        sys.executable,
        str(_common.PROJECT / "run_search.py"),
        "--space",
        "basenet",
        "--search",
        "random",
        "--scheduler",
        "fifo",
        "--seed",
        "0",
        "--num-samples",
        str(concurrent),
        "--max-concurrent",
        str(concurrent),
        "--max-epochs",
        str(epochs),
        "--dataset",
        dataset,
        "--storage-path",
        str(work),
        "--name",
        name,
        "-q",
    ] + (["--data-dir", data_dir] if data_dir else [])
    proc = subprocess.Popen(cmd, cwd=_common.PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[dict] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_tree, args=(psutil.Process(proc.pid), interval, stop, samples))
    sampler.start()
    out, err = proc.communicate(timeout=1800)
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-3000:]}\n{out[-1000:]}")
    trial_pids = {int(r["pid"]) for rows in _common.result_rows(work / name).values() for r in rows if "pid" in r}
    trial_uss = [max((s["uss"].get(pid, 0) for s in samples), default=0) for pid in sorted(trial_pids)]
    return {
        "dataset": dataset,
        "concurrent": concurrent,
        "samples": len(samples),
        "peak_session_pss_mb": round(max(s["pss_total"] for s in samples) / MB, 1),
        "trial_processes": len(trial_pids),
        "peak_trial_uss_mb_mean": round(sum(trial_uss) / max(1, len(trial_uss)) / MB, 1),
        "peak_trial_uss_mb_max": round(max(trial_uss, default=0) / MB, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits only, 2 concurrent trials (a smoke run)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    work = _common.scratch(NAME, args.workdir)
    info = _common.machine()
    if args.quick:
        plan = [("digits", None, 2)]
    else:
        big, big_dir = _common.pick_dataset(False)
        plan = [(big, big_dir, 1), (big, big_dir, 2), ("digits", None, 1), ("digits", None, 2)]
    rows = [session(k, ds, d, work, args.interval, args.epochs) for ds, d, k in plan]
    frame = pd.DataFrame(rows)
    sizes = {ds: _common.load(ds, d).nbytes / MB for ds, d, _ in plan}
    frame["dataset_mb"] = frame["dataset"].map(lambda ds: round(sizes[ds], 1))
    pss = {(r.dataset, r.concurrent): r.peak_session_pss_mb for r in frame.itertuples()}
    uss = {(r.dataset, r.concurrent): r.peak_trial_uss_mb_mean for r in frame.itertuples()}
    big = plan[0][0]
    if not args.quick and big != "digits":
        second = pss[(big, 2)] - pss[(big, 1)]
        baseline = pss[("digits", 2)] - pss[("digits", 1)]
        data_growth = second - baseline
        private = uss[(big, 2)] - uss[("digits", 2)]
        half = sizes[big] / 2
        frame["second_trial_adds_mb"] = round(second, 1)
        frame["second_trial_adds_tiny_data_mb"] = round(baseline, 1)
        frame["second_trial_data_attributable_mb"] = round(data_growth, 1)
        frame["trial_private_data_attributable_mb"] = round(private, 1)
        frame["target_below_mb"] = round(half, 1)
        frame["met"] = bool(data_growth < half and private < half)
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(NAME, frame, args.out, "peak memory with 1 and 2 concurrent trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
