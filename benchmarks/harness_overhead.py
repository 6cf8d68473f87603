#!/usr/bin/env python
"""Harness overhead: the same N BaseNet configurations x E epochs through run_search.py (FIFO, one trial
at a time) and as a plain Keras loop in one process, side by side.

    .venv/bin/python benchmarks/harness_overhead.py            # 8 trials x 5 epochs, CIFAR-100 classes 0..24
    .venv/bin/python benchmarks/harness_overhead.py --quick    # 2 trials x 1 epoch on digits

Both sides are whole processes timed from launch to exit (Python, TensorFlow import and data loading
included), run at niceness 15 (as Ray runs its workers), train with 1 TensorFlow thread (a trial's
--cpus-per-trial 1), the same model
(trainables.architectures), the same tf.data pipeline (trainables.pipeline, `simple` policy), the same
validation split, batch size, epochs and seeds, and both evaluate the test split at the end. The
configurations are the ones the harness sampled (basenet space, random search, fixed seed), read back
from its trials table. Target: harness wall <= 1.05 x plain.

Per-trial start-up comes from Ray's own per-report clocks (result.json): `in-trial` is the first report's
time_this_iter_s minus that epoch's epoch_time_s (TensorFlow import, object-store fetch, model build up
to the first epoch); `gap` is from one trial's last report to the next trial's start (process exit,
scheduling, a fresh worker; Ray's `timestamp` has 1 s resolution).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "harness_overhead"


def plain_loop(configs_path: str, dataset: str, data_dir: str | None) -> None:
    """The baseline, run as its own process: one Keras fit per config, nothing else."""
    started = time.perf_counter()
    # Ray runs trial workers at niceness 15 (Ray sets it in every worker it starts): the baseline gets the
    # same priority, so other processes on a shared machine slow both sides alike.
    os.nice(15 - os.nice(0))
    from trainables.runtime import configure_tensorflow

    configure_tensorflow(1)  # as a trial with --cpus-per-trial 1
    import keras
    import numpy as np

    from trainables.architectures import build_model, build_optimizer
    from trainables.config import TrialConfig
    from trainables.data import validation_split
    from trainables.pipeline import make_dataset, to_unit_float

    data = _common.load(dataset, data_dir)
    out = []
    for params in json.loads(Path(configs_path).read_text()):
        t0 = time.perf_counter()
        config = TrialConfig.from_params(params)
        keras.utils.set_random_seed(config.seed)
        train_idx, val_idx = validation_split(data.y_train, config.seed)
        train = make_dataset(data.x_train, data.y_train, train_idx, config.batch_size, to_unit_float, config.seed)
        val = make_dataset(data.x_train, data.y_train, val_idx, config.batch_size, to_unit_float)
        test = make_dataset(data.x_test, data.y_test, np.arange(len(data.y_test)), config.batch_size, to_unit_float)
        model = build_model(config, data.image_shape, data.num_classes)
        model.compile(optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hist = model.fit(train, validation_data=val, epochs=config.max_epochs, verbose=0)
        test_acc = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
        out.append(
            {
                "seconds": time.perf_counter() - t0,
                "val_accuracy": hist.history["val_accuracy"][-1],
                "test_accuracy": test_acc,
            }
        )
    print("PLAIN_RESULT " + json.dumps({"trials": out, "in_process_s": time.perf_counter() - started}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 trials x 1 epoch on digits (a smoke run)")
    p.add_argument("--trials", type=int, default=None, help="configurations (default 8; quick 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs each (default 5; quick 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default=None, help="force a dataset (default: CIFAR-100 0..24 if present)")
    p.add_argument("--workdir", default=None, help="where the experiment folder goes (default /tmp)")
    p.add_argument("--out", default=None, help="CSV path (default benchmarks/results/harness_overhead.csv)")
    p.add_argument("--plain", default=None, help=argparse.SUPPRESS)  # internal: run the baseline loop
    p.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plain:
        plain_loop(args.plain, args.dataset, args.data_dir)
        return 0

    trials = args.trials or (2 if args.quick else 8)
    epochs = args.epochs or (1 if args.quick else 5)
    dataset, data_dir = _common.pick_dataset(args.quick, args.dataset)
    work = _common.scratch(NAME, args.workdir)
    before = _common.machine()

    search = [
        "--space",
        "basenet",
        "--search",
        "random",
        "--seed",
        str(args.seed),
        "--scheduler",
        "fifo",
        "--max-concurrent",
        "1",
        "--num-samples",
        str(trials),
        "--max-epochs",
        str(epochs),
        "--dataset",
        dataset,
    ] + (["--data-dir", data_dir] if data_dir else [])
    harness_wall, exp = _common.run_search(search, work, "harness")
    trial_table, _ = _common.tables(exp)
    knobs = [c for c in trial_table.columns if c in _knob_names()]
    configs = trial_table.sort_values("started_at")[knobs].to_dict("records")
    configs_path = work / "configs.json"
    configs_path.write_text(json.dumps(configs, default=str))

    cmd = [sys.executable, __file__, "--plain", str(configs_path), "--dataset", dataset] + (
        ["--data-dir", data_dir] if data_dir else []
    )
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_common.PROJECT, capture_output=True, text=True, check=False)
    plain_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"plain loop failed:\n{proc.stderr[-3000:]}")
    plain = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("PLAIN_RESULT ")).split(" ", 1)[1])

    startup, gaps = startup_times(exp)
    after = _common.machine()
    rows = [
        {
            "benchmark": NAME,
            "dataset": dataset,
            "trials": trials,
            "epochs": epochs,
            "harness_wall_s": round(harness_wall, 1),
            "plain_wall_s": round(plain_wall, 1),
            "ratio_harness_over_plain": round(harness_wall / plain_wall, 3),
            "target_ratio": 1.05,
            "met": harness_wall / plain_wall <= 1.05,
            "overhead_per_trial_s": round((harness_wall - plain_wall) / trials, 2),
            "startup_in_trial_median_s": round(float(pd.Series(startup).median()), 2),
            "startup_in_trial_max_s": round(max(startup), 2),
            "gap_between_trials_median_s": round(float(pd.Series(gaps).median()), 1) if gaps else None,
            "harness_train_time_sum_s": round(float(trial_table["train_time_s"].sum()), 1),
            "plain_fit_time_sum_s": round(sum(t["seconds"] for t in plain["trials"]), 1),
            "harness_best_val_accuracy": round(float(trial_table["best_val_accuracy"].max()), 4),
            "plain_best_val_accuracy": round(max(t["val_accuracy"] for t in plain["trials"]), 4),
            "loadavg_before": before["loadavg_1m"],
            "loadavg_after": after["loadavg_1m"],
            "cpus": before["cpus"],
            "date_utc": before["date_utc"],
        }
    ]
    _common.emit(NAME, pd.DataFrame(rows), args.out, "harness vs plain Keras (same configs, same pipeline)")
    return 0


def _knob_names() -> set[str]:
    from trainables.config import knob_types

    return set(knob_types())


def startup_times(exp: Path) -> tuple[list[float], list[float]]:
    """(in-trial start-up per trial, gaps between one trial's end and the next one's start), seconds."""
    startup, spans = [], []
    for rows in _common.result_rows(exp).values():
        epochs = [r for r in rows if "epoch" in r]
        if not epochs:
            continue
        first, last = epochs[0], epochs[-1]
        startup.append(float(first["time_this_iter_s"]) - float(first["epoch_time_s"]))
        # The trainable's start on the wall clock: last report minus the trainable's total time.
        spans.append((float(last["timestamp"]) - float(last["time_total_s"]), float(last["timestamp"])))
    spans.sort()
    gaps = [max(0.0, nxt[0] - prev[1]) for prev, nxt in zip(spans, spans[1:], strict=False)]
    return startup, gaps


if __name__ == "__main__":
    sys.exit(main())
