#!/usr/bin/env python
"""The reference study's cells on the real CIFAR-100 classes 0..24, as far as the CPU allows: test
accuracy of BaseNet, of the ConvNet with each BatchNorm placement and with each augmentation policy.

    .venv/bin/python benchmarks/reference_study.py --epochs 3    # CIFAR-100 0..24 from ../shared/data
    .venv/bin/python benchmarks/reference_study.py --quick       # digits, 1 epoch (a smoke run)

One command of the harness: `run_search.py --space reference --search grid --scheduler fifo
--max-epochs E` (FIFO: every cell trains its full budget, so every cell gets its test accuracy; the
reference hyperparameters are fixed by the space: SGD, learning rate 0.01, batch 32). The reference study
trained 30 epochs; on 2 CPU cores E is small, so the figures are early-training accuracies, comparable
between cells at equal epochs, not the study's final ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "reference_study"


def cell_name(row: pd.Series) -> str:
    if row["model"] == "basenet":
        return "BaseNet"
    return f"ConvNet bn={row['bn_position']} aug={row['augmentation']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, 1 epoch (a smoke run)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per cell (default 3; quick 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of every cell (seeds S, S+1, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--dataset", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 3)
    dataset, data_dir = _common.pick_dataset(args.quick, args.dataset)
    work = _common.scratch(NAME, args.workdir)
    info = _common.machine()
    cmd = ["--space", "reference", "--search", "grid", "--scheduler", "fifo", "--max-epochs", str(epochs),
           "--seed", str(args.seed), "--dataset", dataset, "--max-concurrent", str(args.max_concurrent)]
    if args.repeats > 1:
        cmd += ["--repeats", str(args.repeats)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    wall, exp = _common.run_search(cmd, work, "reference")
    trials, _ = _common.tables(exp)
    trials["cell"] = trials.apply(cell_name, axis=1)
    frame = (trials.groupby("cell", sort=False)
             .agg(runs=("trial_id", "count"), epochs=("epochs_completed", "min"),
                  val_accuracy=("val_accuracy", "mean"), best_val_accuracy=("best_val_accuracy", "mean"),
                  test_accuracy=("test_accuracy", "mean"), train_time_s=("train_time_s", "mean"))
             .reset_index())
    order = ["BaseNet", *(f"ConvNet bn={bn} aug=simple" for bn in ("none", "before_relu", "after_relu")),
             "ConvNet bn=none aug=complex", "ConvNet bn=none aug=whitening"]
    frame["_o"] = frame["cell"].map({c: i for i, c in enumerate(order)}).fillna(len(order))
    frame = frame.sort_values("_o").drop(columns="_o")
    for col in ("val_accuracy", "best_val_accuracy", "test_accuracy"):
        frame[col] = frame[col].round(4)
    frame["train_time_s"] = frame["train_time_s"].round(1)
    frame["dataset"] = dataset
    frame["search_wall_s"] = round(wall, 1)
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(NAME, frame, args.out, f"reference study cells, {epochs} epochs, {dataset}")
    print(f"experiment: {exp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
