#!/usr/bin/env python
"""Early stopping: ASHA against FIFO over the same seeded configurations.

    .venv/bin/python benchmarks/asha_vs_fifo.py            # basenet, 9 configs x 9 epochs, CIFAR-100 0..24
    .venv/bin/python benchmarks/asha_vs_fifo.py --quick    # 2 configs x 2 epochs on digits

Both runs are `run_search.py --space basenet --search random --seed S` (a seeded random sampler hands
out the same configurations in the same order), one with `--scheduler fifo`, one with `--scheduler asha`
(grace 1 epoch, reduction factor 3, max_t = the budget). Figures: total epochs trained (sum of
epochs_completed), wall time of the whole run, best validation accuracy. Target: ASHA's best within
1 point of FIFO's, with <= 1/5 of FIFO's epochs and wall time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "asha_vs_fifo"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 configs x 2 epochs on digits (a smoke run)")
    p.add_argument("--trials", type=int, default=None, help="configurations (default 9; quick 2)")
    p.add_argument("--epochs", type=int, default=None, help="full budget (default 9; quick 2)")
    p.add_argument("--space", default="basenet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--dataset", default=None, help="force a dataset (default: CIFAR-100 0..24 if present)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    trials = args.trials or (2 if args.quick else 9)
    epochs = args.epochs or (2 if args.quick else 9)
    dataset, data_dir = _common.pick_dataset(args.quick, args.dataset)
    work = _common.scratch(NAME, args.workdir)
    info = _common.machine()
    runs = {}
    for scheduler in ("fifo", "asha"):
        cmd = [
            "--space",
            args.space,
            "--search",
            "random",
            "--seed",
            str(args.seed),
            "--scheduler",
            scheduler,
            "--num-samples",
            str(trials),
            "--max-epochs",
            str(epochs),
            "--dataset",
            dataset,
            "--max-concurrent",
            str(args.max_concurrent),
        ] + (["--data-dir", data_dir] if data_dir else [])
        wall, exp = _common.run_search(cmd, work, scheduler)
        table, _ = _common.tables(exp)
        runs[scheduler] = (wall, table)

    knobs = ["optimizer", "learning_rate", "batch_size"]
    fifo_cfg = runs["fifo"][1].sort_values("trial_id")[knobs].round(12).to_dict("records")
    asha_cfg = runs["asha"][1].sort_values("trial_id")[knobs].round(12).to_dict("records")
    same = sorted(map(repr, fifo_cfg)) == sorted(map(repr, asha_cfg))
    fifo_wall, fifo = runs["fifo"]
    rows = []
    for scheduler, (wall, table) in runs.items():
        total_epochs = int(table["epochs_completed"].sum())
        best = float(table["best_val_accuracy"].max())
        rows.append(
            {
                "scheduler": scheduler,
                "dataset": dataset,
                "space": args.space,
                "configs": trials,
                "max_epochs": epochs,
                "max_concurrent": args.max_concurrent,
                "same_configs": same,
                "total_epochs": total_epochs,
                "wall_s": round(wall, 1),
                "best_val_accuracy": round(best, 4),
                "epochs_ratio_vs_fifo": round(total_epochs / int(fifo["epochs_completed"].sum()), 3),
                "wall_ratio_vs_fifo": round(wall / fifo_wall, 3),
                "gap_to_fifo_best_points": round(100 * (float(fifo["best_val_accuracy"].max()) - best), 2),
                "stopped_early": int(table["stopped_early"].sum()),
                "loadavg_1m": info["loadavg_1m"],
                "cpus": info["cpus"],
                "date_utc": info["date_utc"],
            }
        )
    frame = pd.DataFrame(rows)
    asha = frame[frame["scheduler"] == "asha"].iloc[0]
    frame["met"] = bool(
        asha["gap_to_fifo_best_points"] <= 1.0
        and asha["epochs_ratio_vs_fifo"] <= 0.2
        and asha["wall_ratio_vs_fifo"] <= 0.2
    )
    _common.emit(NAME, frame, args.out, "ASHA vs FIFO (same seeded configurations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
