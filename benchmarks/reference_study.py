#!/usr/bin/env python
"""The reference study's CIFAR cells on the real CIFAR-100 classes 0..24: test accuracy of each cell
over seeds with its 95 % interval, and the harness's answers to the study's two questions.

    .venv/bin/python benchmarks/reference_study.py --epochs 30 --repeats 3   # the study's budget
    .venv/bin/python benchmarks/reference_study.py --quick                   # digits, 1 epoch (a smoke run)
    .venv/bin/python benchmarks/reference_study.py --experiments results/ref-basenet results/ref-convnet

One command of the harness per experiment: `run_search.py --space reference --search grid --scheduler
fifo --max-epochs E --repeats R [--cells model=basenet]` (FIFO: every cell trains its full budget; the
reference hyperparameters are fixed by the space: SGD, learning rate 0.01, no momentum, batch 32).
`--experiments` summarises experiments already run (e.g. BaseNet cells at 5 seeds and ConvNet cells at
2, run as two experiments with `--cells`), each with its own report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

from analysis import questions, stats

NAME = "reference_study"
ORDER = [
    "BaseNet",
    "BaseNet + BN before ReLU",
    "BaseNet + BN after ReLU",
    "ConvNet (BN after ReLU), simple",
    "ConvNet (BN after ReLU), complex",
    "ConvNet (BN after ReLU), whitening",
]


def cell_name(row: pd.Series) -> str:
    if row["model"] == "basenet":
        return {"none": "BaseNet", "before_relu": "BaseNet + BN before ReLU", "after_relu": "BaseNet + BN after ReLU"}[
            row["bn_position"]
        ]
    bn = {"none": "no BN", "before_relu": "BN before ReLU", "after_relu": "BN after ReLU"}[row["bn_position"]]
    return f"ConvNet ({bn}), {row['augmentation']}"


def cell_table(trials: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cell, g in trials.groupby(trials.apply(cell_name, axis=1), sort=False):
        iv = stats.t_interval(g["test_accuracy"].dropna(), stats.ACCURACY)
        rows.append(
            {
                "cell": cell,
                "seeds": " ".join(str(int(s)) for s in sorted(g["seed"])),
                "runs": len(g),
                "epochs": int(g["epochs_completed"].min()),
                "val_accuracy": round(float(g["val_accuracy"].mean()), 4),
                "test_accuracy": round(iv.mean, 4),
                "test_std": round(iv.std, 4),
                "test_ci_low": round(iv.ci_low, 4),
                "test_ci_high": round(iv.ci_high, 4),
                "train_time_s": round(float(g["train_time_s"].mean()), 1),
            }
        )
    frame = pd.DataFrame(rows)
    frame["_o"] = frame["cell"].map({c: i for i, c in enumerate(ORDER)}).fillna(len(ORDER))
    return frame.sort_values("_o").drop(columns="_o")


def answers(experiments: list[Path]) -> list[str]:
    """The reports' answers to the study's questions (each experiment's report.md, rebuilt here)."""
    from analysis.report import build_report

    lines = []
    for exp in experiments:
        summary = build_report(str(exp))["summary"]
        for text in dict.fromkeys(summary.query("kind == 'question'")["question"]):
            lines.append(f"{text} {questions.answer(summary, text)}".replace("**", ""))
            lines += [f"  {v}" for v in summary.query("kind == 'question' and question == @text")["verdict"].dropna()]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, 1 epoch (a smoke run)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per cell (default 30; quick 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of every cell (seeds S, S+1, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--dataset", default=None)
    p.add_argument("--workdir", default=None)
    p.add_argument(
        "--experiments",
        nargs="+",
        type=Path,
        default=None,
        help="summarise these finished experiment folders instead of running the grid",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    info = _common.machine()
    if args.experiments:
        experiments, wall = args.experiments, None
    else:
        epochs = args.epochs or (1 if args.quick else 30)
        dataset, data_dir = _common.pick_dataset(args.quick, args.dataset)
        cmd = [
            "--space",
            "reference",
            "--search",
            "grid",
            "--scheduler",
            "fifo",
            "--max-epochs",
            str(epochs),
            "--seed",
            str(args.seed),
            "--dataset",
            dataset,
            "--max-concurrent",
            str(args.max_concurrent),
        ]
        if args.repeats > 1:
            cmd += ["--repeats", str(args.repeats)]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        wall, exp = _common.run_search(cmd, _common.scratch(NAME, args.workdir), "reference")
        experiments = [exp]
    trials = pd.concat([_common.tables(exp)[0] for exp in experiments], ignore_index=True)
    frame = cell_table(trials)
    frame["dataset"] = trials["dataset"].iloc[0]
    frame["search_wall_s"] = None if wall is None else round(wall, 1)
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(NAME, frame, args.out, "reference study cells (test accuracy over seeds, 95 % t-interval)")
    print("\n".join(answers(experiments)))
    print("experiments: " + " ".join(str(e) for e in experiments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
