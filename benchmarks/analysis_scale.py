#!/usr/bin/env python
"""The analysis at scale: `python -m analysis` (tables, then the report) on synthetic experiment folders of
N trials x 30 epochs, its wall time and peak memory at each N, so growth is read side by side.

    .venv/bin/python benchmarks/analysis_scale.py --trials 500 2000     # what this machine allows
    .venv/bin/python benchmarks/analysis_scale.py --trials 1000 10000   # the issue's scale

Each folder is what a search of the batchnorm space leaves (experiment.json written by the driver's own
writer, one folder per trial with params.json and a result.json of Tune's rows: the keys
trainables.callbacks reports plus Tune's own), with configs drawn by a seeded RNG, every trial run to the
full budget (30 epochs, a test accuracy at the last) and a smooth, noisy learning curve per config. No
checkpoints: the analysis never reads them. `python -m analysis EXP --rebuild-tables` (tables, then the
report: what a first analysis does) runs in a process of its own per folder, then `python -m analysis
EXP` (the report from those tables); the difference is the tables' time. Peak resident memory is each
process's ru_maxrss. Target (issue 22): the report of 10,000 trials in
<= 60 s, time and memory growing linearly (time per trial about constant across N).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "analysis_scale"
EPOCHS = 30
TARGET_S = 60.0  # the report of 10,000 trials (issue 22)
# Runs `python -m analysis` and prints its peak resident memory (ru_maxrss: KiB on Linux) as it exits.
MEASURED = (
    "import atexit, resource, runpy, sys\n"
    "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "atexit.register(lambda: print('maxrss_kib', peak(), file=sys.stderr))\n"
    "sys.argv = ['analysis', *sys.argv[1:]]\n"
    "runpy.run_module('analysis', run_name='__main__')\n"
)


def trial_rows(trial_id: str, config: dict, rng: random.Random, started: float) -> list[dict]:
    """30 epochs of Tune's result.json rows for one trial: a learning curve that rises to a config-shaped
    plateau, with noise."""
    lr = config["learning_rate"]
    bonus = {"none": 0.0, "before_relu": 0.05, "after_relu": 0.04}[config["bn_position"]]
    plateau = max(0.05, 0.6 - 0.1 * (math.log10(lr) + 2) ** 2 + bonus + (0.03 if config["model"] == "convnet" else 0))
    rows, total = [], 0.0
    for epoch in range(1, EPOCHS + 1):
        val = min(0.99, max(0.0, plateau * (1 - 0.7**epoch) + rng.gauss(0, 0.01)))
        took = 2.0 + rng.random()
        total += took
        row = {
            "epoch": epoch,
            "loss": 2.0 * (1 - val) + 0.1,
            "accuracy": min(0.99, val + 0.05),
            "val_loss": 2.0 * (1 - val) + 0.2,
            "val_accuracy": val,
            "learning_rate": lr,
            "epoch_time_s": took,
            "gpus": 0.0,
            "node": "synthetic:0",
            "pid": 1000 + int(trial_id[:4], 16) % 1000,
            "param_count": 120_000 if config["model"] == "basenet" else 1_200_000,
            "macs_per_image": 613_300 if config["model"] == "basenet" else 9_000_000,
            "inference_s_per_image": 0.0005,
            "inference_s_per_image_large": 0.00005,
            "inference_large_batch": 32,
            "inference_device": "CPU:0",
            "timestamp": int(started + total),
            "checkpoint_dir_name": f"checkpoint_{epoch - 1:06d}",
            "should_checkpoint": True,
            "done": epoch == EPOCHS,
            "training_iteration": epoch,
            "trial_id": trial_id,
            "date": "2026-12-03_12-00-00",
            "time_this_iter_s": took,
            "time_total_s": total,
            "hostname": "synthetic",
            "node_ip": "192.0.2.2",
            "config": config,
            "time_since_restore": total,
            "iterations_since_restore": epoch,
        }
        if epoch == EPOCHS:
            row["test_accuracy"] = max(0.0, val - 0.01 + rng.gauss(0, 0.01))
        rows.append(row)
    return rows


def build_experiment(root: Path, trials: int, seed: int) -> Path:
    """A synthetic experiment folder `root/synthetic-N` of `trials` trials x EPOCHS epochs."""
    from experiment import folder

    exp = root / f"synthetic-{trials}"
    search = exp / "search"
    search.mkdir(parents=True)
    meta = {
        "space": "batchnorm",
        "dataset": "digits",
        "max_epochs": EPOCHS,
        "num_samples": trials,
        "seed": seed,
        "scheduler": "asha",
        "search": "optuna",
        "cpus_per_trial": 1.0,
        "gpus_per_trial": 0.0,
        "argv": ["benchmarks/analysis_scale.py"],
    }
    folder.write_record(folder.locate(str(root), exp.name), meta)
    rng = random.Random(seed)
    started = 1_796_300_000.0
    for n in range(trials):
        trial_id = f"{rng.getrandbits(32):08x}"
        config = {
            "model": rng.choice(["basenet", "convnet"]),
            "bn_position": rng.choice(["none", "before_relu", "after_relu"]),
            "learning_rate": 10 ** rng.uniform(-4, -1),
            "optimizer": rng.choice(["sgd", "adam"]),
            "dataset": "digits",
            "seed": n % 5,  # seeds repeat, so the report's seed-paired verdicts have pairs
            "max_epochs": EPOCHS,
        }
        trial_dir = search / trial_id
        trial_dir.mkdir()
        (trial_dir / "params.json").write_text(json.dumps(config))
        rows = trial_rows(trial_id, config, rng, started + 60 * n)
        (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return exp


def run_analysis(exp: Path, timeout: float, *flags: str) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, first line of its output) of `python -m analysis EXP [flags]`."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED, str(exp), *flags],
        cwd=_common.PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"python -m analysis {exp} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    peak_kib = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("maxrss_kib"))
    return wall, peak_kib / 1024, proc.stdout.strip().splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 and 50 trials (a smoke run)")
    p.add_argument("--trials", type=int, nargs="+", default=None, help="experiment sizes (default 500 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per analysis run")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    work = _common.scratch(NAME, args.workdir)
    info = _common.machine()
    rows = []
    sizes = args.trials or ([20, 50] if args.quick else [500, 2000])
    for trials in sorted(sizes):
        t0 = time.perf_counter()
        exp = build_experiment(work, trials, args.seed)
        built = time.perf_counter() - t0
        wall, peak_mb, first_line = run_analysis(exp, args.timeout, "--rebuild-tables")  # a first analysis
        report_wall, report_peak_mb, _ = run_analysis(exp, args.timeout)  # again, the tables there: the report
        rows.append(
            {
                "trials": trials,
                "epoch_rows": trials * EPOCHS,
                "build_s": round(built, 1),
                "analysis_s": round(wall, 1),
                "analysis_ms_per_trial": round(1000 * wall / trials, 2),
                "peak_rss_mb": round(peak_mb, 1),
                "report_only_s": round(report_wall, 1),
                "report_only_peak_rss_mb": round(report_peak_mb, 1),
                "tables_s": round(wall - report_wall, 1),  # the difference: building and writing the tables
                "report": first_line,
            }
        )
    frame = pd.DataFrame(rows)
    per = frame["analysis_ms_per_trial"]
    frame["time_linear"] = bool(per.iloc[-1] <= 1.5 * per.iloc[0]) if len(per) > 1 else None
    frame["target_s_at_10000"] = TARGET_S
    frame["projected_s_at_10000"] = round(float(per.iloc[-1]) * 10, 1)  # ms per trial x 10,000 / 1,000
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    frame["loadavg_after"] = _common.machine()["loadavg_1m"]
    _common.emit(NAME, frame, args.out, "python -m analysis on synthetic experiments of N trials x 30 epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
