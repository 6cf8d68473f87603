#!/usr/bin/env python
"""Searcher quality: Optuna TPE against random search at equal budget on the `batchnorm` space.

    .venv/bin/python benchmarks/searcher_quality.py            # 3 BN x 2 optimizers x 4 learning rates, 1 epoch
    .venv/bin/python benchmarks/searcher_quality.py --quick    # a 1-point learning-rate table, 1 epoch, subset

A cheaper proxy than full searches (each of which would start one TensorFlow process per trial): a
tabular benchmark, as HPOBench/NAS-Bench do. Step 1 trains the real ConvNet (trainables.architectures,
trainables.pipeline, digits, 1 TensorFlow thread, in this process) on every cell of a grid over the
space: bn_position x optimizer x --lr-points learning rates log-spaced over the space's range
[1e-4, 1e-1], for --epochs epochs, and records its best validation accuracy. Step 2 runs Optuna studies
with the space's own define-by-run (search_spaces.batchnorm.define) and each sampler (TPESampler and
RandomSampler, the ones run_search uses, seeded alike) for --budget trials and --seeds seeds; a trial's
score is the table's value for its bn_position and optimizer, linearly interpolated in log10(learning
rate). Figures: mean and median best validation accuracy after 5, 10, 20, ... trials per sampler, and how
often TPE's best >= random's. TPE samples its first 10 trials at random (Optuna's n_startup_trials), so
the two can only differ after trial 10.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "searcher_quality"
LR_RANGE = (1e-4, 1e-1)  # search_spaces.batchnorm's learning_rate range


def train_table(lrs: np.ndarray, epochs: int, train_images: int | None) -> pd.DataFrame:
    """Best validation accuracy of the ConvNet on digits for every (bn_position, optimizer, lr)."""
    from trainables.runtime import configure_tensorflow

    configure_tensorflow(1)
    import keras

    from trainables.architectures import build_model, build_optimizer
    from trainables.augment import policy_transforms
    from trainables.config import TrialConfig
    from trainables.data import validation_split
    from trainables.pipeline import make_dataset

    data = _common.load("digits", None)
    rows = []
    for bn in ("none", "before_relu", "after_relu"):
        for opt in ("sgd", "adam"):
            for lr in lrs:
                config = TrialConfig(
                    model="convnet",
                    dataset="digits",
                    bn_position=bn,
                    optimizer=opt,
                    learning_rate=float(lr),
                    max_epochs=epochs,
                )
                keras.utils.set_random_seed(config.seed)
                train_idx, val_idx = validation_split(data.y_train, config.seed)
                if train_images:
                    train_idx = train_idx[:train_images]
                train_tf, eval_tf = policy_transforms(config, data, train_idx)
                train = make_dataset(data.x_train, data.y_train, train_idx, config.batch_size, train_tf, 0)
                val = make_dataset(data.x_train, data.y_train, val_idx, config.batch_size, eval_tf)
                model = build_model(config, data.image_shape, data.num_classes)
                model.compile(
                    optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
                )
                t0 = time.perf_counter()
                hist = model.fit(train, validation_data=val, epochs=epochs, verbose=0)
                rows.append(
                    {
                        "bn_position": bn,
                        "optimizer": opt,
                        "learning_rate": float(lr),
                        "best_val_accuracy": float(np.nanmax(hist.history["val_accuracy"])),
                        "train_s": time.perf_counter() - t0,
                    }
                )
    return pd.DataFrame(rows)


def surrogate(table: pd.DataFrame):
    curves = {
        key: (np.log10(g["learning_rate"].to_numpy()), g["best_val_accuracy"].to_numpy())
        for key, g in table.sort_values("learning_rate").groupby(["bn_position", "optimizer"])
    }

    def score(params: dict) -> float:
        x, y = curves[(params["bn_position"], params["optimizer"])]
        return float(np.interp(np.log10(params["learning_rate"]), x, y))

    return score


def run_studies(score, seeds: int, budget: int) -> pd.DataFrame:
    import optuna

    from search_spaces.batchnorm import define

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for seed in range(seeds):
        for name, sampler in (
            ("tpe", optuna.samplers.TPESampler(seed=seed)),
            ("random", optuna.samplers.RandomSampler(seed=seed)),
        ):
            study = optuna.create_study(direction="maximize", sampler=sampler)

            def objective(trial):
                define(trial)
                return score(trial.params)

            study.optimize(objective, n_trials=budget)
            best = np.maximum.accumulate([t.value for t in study.trials])
            rows += [{"seed": seed, "sampler": name, "trials": i + 1, "best": float(b)} for i, b in enumerate(best)]
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 learning rate, 1 epoch, 200 images (a smoke run)")
    p.add_argument("--lr-points", type=int, default=None, help="learning rates in the table (default 4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per table cell (default 1)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per sampler (default 20)")
    p.add_argument("--budget", type=int, default=None, help="trials per study (default 40)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    lr_points = args.lr_points or (1 if args.quick else 4)
    epochs = args.epochs or 1
    seeds = args.seeds or (2 if args.quick else 20)
    budget = args.budget or (12 if args.quick else 40)
    info = _common.machine()

    t0 = time.perf_counter()
    table = train_table(
        np.logspace(np.log10(LR_RANGE[0]), np.log10(LR_RANGE[1]), lr_points), epochs, 200 if args.quick else None
    )
    table_s = time.perf_counter() - t0
    curves = run_studies(surrogate(table), seeds, budget)
    checkpoints = sorted({n for n in (5, 10, 15, 20, 30, 40, budget) if n <= budget})
    rows = []
    for n in checkpoints:
        at = curves[curves["trials"] == n].pivot(index="seed", columns="sampler", values="best")
        rows.append(
            {
                "trials": n,
                "seeds": seeds,
                "tpe_mean_best": round(at["tpe"].mean(), 4),
                "random_mean_best": round(at["random"].mean(), 4),
                "tpe_median_best": round(at["tpe"].median(), 4),
                "random_median_best": round(at["random"].median(), 4),
                "tpe_at_least_random": round(float((at["tpe"] >= at["random"]).mean()), 2),
                "table_optimum": round(float(table["best_val_accuracy"].max()), 4),
            }
        )
    frame = pd.DataFrame(rows)
    frame["proxy"] = f"tabular: digits ConvNet, {lr_points} lr x 3 bn x 2 opt, {epochs} epochs, interp in log lr"
    frame["table_train_s"] = round(table_s, 1)
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(NAME, frame, args.out, "TPE vs random at equal budget (batchnorm space, tabular proxy)")
    table_path = (
        Path(args.out).with_name(Path(args.out).stem + "_table.csv")
        if args.out
        else _common.RESULTS / f"{NAME}_table.csv"
    )
    table.round(4).to_csv(table_path, index=False)
    print(f"-> {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
