#!/usr/bin/env python
"""Warm workers: start-up of a trial that reuses a worker process against one in a fresh process, and
the resident memory of one worker over many trials (flat memory).

    .venv/bin/python benchmarks/warm_workers.py            # 100 trials reused, 10 fresh, 300 limited
    .venv/bin/python benchmarks/warm_workers.py --quick    # 8 reused, 3 fresh, 12 limited

Method. Three Tune runs side by side in one script, each of real trials (trainables.trainable.train_trial:
TensorFlow, model, tf.data pipeline, one report per epoch with a checkpoint), one trial at a time
(an embedded Ray with one CPU), `--epochs` epochs each, on a 300-image slice of digits so that training
is short and start-up is what shows. The configs cycle through models, optimizers, batch sizes and all
three augmentation policies (different graphs, shapes and statistics from one trial to the next), all
with seed 0, as the trials of one search share its seed (so the validation split, and with it the
fitted normalisation and ZCA, are cached after their first trial, as in a search):
- reused: Tune's actor reuse, as run_search runs by default;
- fresh: `reuse_actors=False`, as run_search --fresh-workers (a new worker process per trial);
- limited: reuse with run_search's default `--worker-memory-growth` (`--growth` sets another): a worker
  is replaced between two trials once its memory is that many % above what it was after its first trial.
The trainable is wrapped (benchmark instrumentation only) to log, per trial, the wall clock when the
function was entered and at each tune.report, the epoch time Keras measured, and the worker's resident
memory (VmRSS) when the trial ends, after its reset at the next trial's start is still to come.
Start-up of a trial = start of its first epoch (Keras' on_epoch_begin, logged) - the previous trial's last
report: everything between two trials' training (Tune's hand-over, a process start and `import tensorflow`
when fresh, Keras reset, model and pipeline building). The estimate used before, first report - first
epoch's time, is kept as `_approx`: it also counted the first epoch's cost measurement and checkpoint.
The first trial of a run is left out (Ray's own start). Memory: VmRSS after trial 100 against after trial 5
of the reused run (issue 11), and after trial 300 against after trial 10 of the limited run (issue 22),
whichever worker ran them. Targets: median start-up of a reused trial <= 0.5 s; the limited run's RSS after
trial 300 within 15 % of trial 10's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "warm_workers"

CONFIGS = [  # cycled: each differs from the one before in model, optimizer, batch or policy
    {"model": "basenet", "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32, "augmentation": "simple"},
    {
        "model": "convnet",
        "depth": 2,
        "pool_after": "2",
        "optimizer": "adam",
        "learning_rate": 0.001,
        "batch_size": 64,
        "augmentation": "complex",
        "bn_position": "after_relu",
    },
    {
        "model": "convnet",
        "depth": 3,
        "pool_after": "2",
        "optimizer": "sgd",
        "learning_rate": 0.02,
        "batch_size": 32,
        "augmentation": "whitening",
        "bn_position": "before_relu",
    },
    {
        "model": "basenet",
        "optimizer": "adam",
        "learning_rate": 0.0005,
        "batch_size": 64,
        "augmentation": "complex",
        "bn_position": "after_relu",
    },
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def instrumented(params: dict, data, log: str, cpus: float = 1, gpus: float = 0) -> None:
    """train_trial with a log line per trial: entry, report times, epoch times, RSS at the end."""
    from ray import tune

    from trainables import callbacks, trainable

    entered = time.time()
    reports: list[tuple[float, float]] = []
    begun: list[float] = []  # wall clock at each epoch's on_epoch_begin
    real_report, real_begin = tune.report, callbacks.EpochReporter.on_epoch_begin

    def report(metrics, checkpoint=None):
        reports.append((time.time(), float(metrics.get("epoch_time_s", float("nan")))))
        return real_report(metrics, checkpoint=checkpoint)

    def on_epoch_begin(self, epoch, logs=None):
        begun.append(time.time())
        return real_begin(self, epoch, logs)

    callbacks.tune.report = report  # the module EpochReporter reports through (benchmark-only patches)
    callbacks.EpochReporter.on_epoch_begin = on_epoch_begin
    try:
        trainable.train_trial(params, data, cpus, gpus)
    finally:
        callbacks.tune.report, callbacks.EpochReporter.on_epoch_begin = real_report, real_begin
        record = {
            "trial_id": tune.get_context().get_trial_id(),
            "pid": os.getpid(),
            "entered": entered,
            "begun": begun[0] if begun else None,
            "reports": reports,
            "rss_mb": rss_mb(),
        }
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")


def run(trials: int, epochs: int, reuse: bool, data, work: Path, growth: float = 0) -> list[dict]:
    """`trials` real trials one at a time; `growth` > 0: a reused worker is replaced once its memory has grown
    that many % over its first trial (run_search's --worker-memory-growth: the callback build_tuner adds)."""
    from ray import tune

    from tuning import tune_settings, worker_memory
    from tuning.optuna_search import fixed_configs_search

    kind = ("limited" if growth else "reused") if reuse else "fresh"
    log = work / f"log-{kind}.jsonl"
    callbacks = tune_settings.result_loggers()
    if growth:
        callbacks.append(worker_memory.WorkerMemoryLimit(growth))
        worker_memory.install()
    configs = [
        {**CONFIGS[i % len(CONFIGS)], "dataset": "digits", "max_epochs": epochs, "seed": 0} for i in range(trials)
    ]
    search_alg, param_space = fixed_configs_search(configs)
    tuner = tune.Tuner(
        tune.with_parameters(instrumented, data=data, log=str(log)),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy", mode="max", num_samples=trials, search_alg=search_alg, reuse_actors=reuse
        ),
        run_config=tune.RunConfig(
            name="search",
            storage_path=str(work / kind),
            checkpoint_config=tune_settings.checkpoint_config(),
            callbacks=callbacks,
            verbose=0,
        ),
    )
    grid = tuner.fit()
    if grid.num_errors:
        raise RuntimeError(f"{grid.num_errors} trials failed: {[str(r.error)[:300] for r in grid if r.error]}")
    rows = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["entered"])
    for i, (prev, row) in enumerate(zip([None, *rows], rows, strict=False)):
        row["trial"] = i  # the order trials ran in (the log has Tune's trial id)
        first_report, first_epoch_s = row["reports"][0]
        # Until issue 22's second look, start-up was estimated as the first report less the epoch's time,
        # which also counted what runs between an epoch's end and its report (the first epoch's cost
        # measurement, the last one's test evaluation, the checkpoint's save and copy): kept as _approx.
        approx = first_report - first_epoch_s
        row["first_epoch_start"] = row["begun"] if row.get("begun") is not None else approx
        last = None if prev is None else prev["reports"][-1][0]
        row["startup_s"] = None if last is None else row["first_epoch_start"] - last
        row["startup_approx_s"] = None if last is None else approx - last
        row["in_trial_s"] = row["first_epoch_start"] - row["entered"]
    return rows


def small_digits(n: int):
    from trainables.data import ImageDataset, load_digits

    full = load_digits()
    return ImageDataset(
        full.name, full.x_train[:n], full.y_train[:n], full.x_test[: n // 3], full.y_test[: n // 3], full.num_classes
    )


def main(argv: list[str] | None = None) -> int:
    from tuning.tune_settings import WORKER_MEMORY_GROWTH

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 reused, 3 fresh and 12 limited trials (a smoke run)")
    p.add_argument("--trials", type=int, default=None, help="trials of the reused run (default 100; quick 8)")
    p.add_argument("--fresh-trials", type=int, default=None, help="trials of the fresh run (default 10; quick 3)")
    p.add_argument(
        "--limited-trials", type=int, default=None, help="trials of the memory-limited run (default 300; quick 12)"
    )
    p.add_argument(
        "--growth",
        type=float,
        default=WORKER_MEMORY_GROWTH,
        help=f"the limited run's --worker-memory-growth, %% (default: run_search's, {WORKER_MEMORY_GROWTH:g})",
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--images", type=int, default=300, help="training images of the digits slice")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    trials = args.trials or (8 if args.quick else 100)
    fresh_trials = args.fresh_trials or (3 if args.quick else 10)
    limited_trials = args.limited_trials or (12 if args.quick else 300)
    work = _common.scratch(NAME, args.workdir)
    os.environ.setdefault("KERAS_HPO_CACHE", str(work / "node-cache"))  # statistics fitted once, here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    data = small_digits(args.images)
    before = _common.machine()
    import ray

    _common.start_ray(num_cpus=1)  # one CPU: one trial at a time; inherited environment set above
    walls = {}
    try:
        t0 = time.perf_counter()
        fresh = run(fresh_trials, args.epochs, False, data, work)
        walls["fresh"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        reused = run(trials, args.epochs, True, data, work)
        walls["reused"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        limited = run(limited_trials, args.epochs, True, data, work, growth=args.growth)
        walls["limited"] = time.perf_counter() - t0
    finally:
        ray.shutdown()
    after = _common.machine()

    def med(rows: list[dict], key: str, stat: Callable[[list], float] = statistics.median) -> float:
        values = [r[key] for r in rows if r[key] is not None]
        return stat(values) if values else float("nan")

    reused_pids = {r["pid"] for r in reused}
    early = min(5, len(reused)) - 1  # after trial 5 (1-based)
    rss_early, rss_last = reused[early]["rss_mb"], reused[-1]["rss_mb"]
    tenth = min(10, len(limited)) - 1  # after trial 10 (1-based)
    rss_tenth, rss_end = limited[tenth]["rss_mb"], limited[-1]["rss_mb"]
    settled = [r["rss_mb"] for r in limited[tenth:]]
    limited_pids = [r["pid"] for r in limited]
    row = {
        "trials_reused": len(reused),
        "trials_fresh": len(fresh),
        "trials_limited": len(limited),
        "epochs": args.epochs,
        "images": args.images,
        "reused_worker_processes": len(reused_pids),
        "fresh_worker_processes": len({r["pid"] for r in fresh}),
        "startup_reused_median_s": round(med(reused, "startup_s"), 3),
        "startup_reused_approx_median_s": round(med(reused, "startup_approx_s"), 3),
        "startup_reused_max_s": round(max(r["startup_s"] for r in reused[1:]), 3) if len(reused) > 1 else None,
        "startup_fresh_median_s": round(med(fresh, "startup_s"), 3),
        "in_trial_reused_median_s": round(med(reused, "in_trial_s"), 3),
        "in_trial_fresh_median_s": round(med(fresh, "in_trial_s"), 3),
        "startup_ratio_fresh_over_reused": round(med(fresh, "startup_s") / med(reused, "startup_s"), 1),
        "target_startup_s": 0.5,
        "met_startup": bool(med(reused, "startup_s") <= 0.5),
        "wall_per_trial_reused_s": round(walls["reused"] / len(reused), 2),
        "wall_per_trial_fresh_s": round(walls["fresh"] / len(fresh), 2),
        f"rss_after_trial_{early + 1}_mb": round(rss_early, 1),
        f"rss_after_trial_{len(reused)}_mb": round(rss_last, 1),
        "rss_growth": round(rss_last / rss_early - 1, 3),
        "rss_growth_per_trial_mb": round((rss_last - rss_early) / max(1, len(reused) - early - 1), 2),
        # The limited run: a reused worker replaced once it is `growth` % above its first trial.
        "limited_growth_percent": args.growth,
        "limited_worker_processes": len(set(limited_pids)),
        "limited_trials_per_worker": round(len(limited) / len(set(limited_pids)), 1),
        "startup_limited_median_s": round(med(limited, "startup_s"), 3),
        "startup_limited_mean_s": round(med(limited, "startup_s", statistics.fmean), 3),
        "startup_reused_mean_s": round(med(reused, "startup_s", statistics.fmean), 3),
        "in_trial_limited_median_s": round(med(limited, "in_trial_s"), 3),
        "wall_per_trial_limited_s": round(walls["limited"] / len(limited), 2),
        f"limited_rss_after_trial_{tenth + 1}_mb": round(rss_tenth, 1),
        f"limited_rss_after_trial_{len(limited)}_mb": round(rss_end, 1),
        "limited_rss_change": round(rss_end / rss_tenth - 1, 3),
        "limited_rss_min_from_trial_10_mb": round(min(settled), 1),
        "limited_rss_max_from_trial_10_mb": round(max(settled), 1),
        "target_limited_rss_change": 0.15,
        "met_limited_rss": bool(abs(rss_end / rss_tenth - 1) <= 0.15),
        "loadavg_1m": before["loadavg_1m"],
        "loadavg_after": after["loadavg_1m"],
        "cpus": before["cpus"],
        "date_utc": before["date_utc"],
    }
    _common.emit(NAME, pd.DataFrame([row]), args.out, "warm workers: start-up and resident memory")
    trace = pd.DataFrame(
        [
            {
                "run": run_name,
                "trial": r["trial"],
                "pid": r["pid"],
                "startup_s": r["startup_s"],
                "startup_approx_s": r["startup_approx_s"],
                "in_trial_s": r["in_trial_s"],
                "rss_mb": r["rss_mb"],
            }
            for run_name, rows in (("reused", reused), ("fresh", fresh), ("limited", limited))
            for r in rows
        ]
    )
    trace_path = (
        Path(args.out).with_name(Path(args.out).stem + "_trace.csv")
        if args.out
        else _common.RESULTS / f"{NAME}_trace.csv"
    )
    trace.to_csv(trace_path, index=False)
    print(f"-> {trace_path} (per trial)")
    print(f"RSS by trial (reused): {np.round([r['rss_mb'] for r in reused], 0).tolist()}")
    print(f"RSS by trial (limited): {np.round([r['rss_mb'] for r in limited], 0).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
