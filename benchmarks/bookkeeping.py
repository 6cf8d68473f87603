#!/usr/bin/env python
"""Scale of the bookkeeping: many trials of a trivial trainable (no TensorFlow) through the harness's
path (Tuner + run_search's Optuna searcher + ASHA + one tune.report with a checkpoint per epoch into a
storage path), then the table export at 250 / 500 / 1,000 trials.

    .venv/bin/python benchmarks/bookkeeping.py            # 1,000 trials x 3 epochs
    .venv/bin/python benchmarks/bookkeeping.py --quick    # 20 trials

The Tuner is built as run_search.py builds it (its build_searcher / build_scheduler / trial_dirname,
metric val_accuracy, mode max, the batchnorm space's define-by-run), and an experiment.json like
run_search's is written so analysis.tables.export_tables reads the folder as it reads a real one. The
trainable reports what trainables.callbacks reports (same keys, `epoch` 1-based, a small checkpoint),
with a val_accuracy that is a smooth function of the config, so ASHA and TPE have something to act on.

`--reuse-actors` (default: off, like run_search) lets Tune reuse a trial's worker process for the next
trial: off, every trial is a fresh Ray actor process (what the harness does, so a trial's GPU memory is
returned), and that process start-up dominates; on, what remains is Tune's, Optuna's and ASHA's own
bookkeeping. Harness time per trial = Tuner.fit wall / trials. Target: <= 50 ms per trial; export time
growing linearly (time per trial about constant from 250 to 1,000).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "bookkeeping"


def trivial_trainable(config: dict) -> None:
    """Reports like trainables.callbacks.EpochReporter, with no TensorFlow: a config-shaped score."""
    import os

    from ray import tune

    lr = float(config["learning_rate"])
    bonus = {"none": 0.0, "before_relu": 0.05, "after_relu": 0.04}.get(config.get("bn_position"), 0.0)
    peak = 0.6 - 0.1 * (math.log10(lr) + 2) ** 2 + bonus  # best near lr = 1e-2
    for epoch in range(1, int(config["max_epochs"]) + 1):
        val = peak * (1 - 0.5 ** epoch)
        metrics = {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": val, "val_loss": 1.0 - val,
                   "val_accuracy": val, "learning_rate": lr, "epoch_time_s": 0.0, "gpus": 0.0,
                   "node": "bench", "pid": os.getpid()}
        if epoch == int(config["max_epochs"]):
            metrics["test_accuracy"] = val
        with tempfile.TemporaryDirectory(prefix="ckpt-") as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch, "seed": config.get("seed", 0)}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def build_tuner(trials: int, epochs: int, exp: Path, reuse: bool, seed: int):  # noqa: ANN201
    """A Tuner as driver.run builds one, with the trivial trainable in place of train_trial."""
    import driver
    import run_search
    from ray import tune

    from search_spaces import SPACES

    args = run_search.parse_args(["--space", "batchnorm", "--num-samples", str(trials), "--max-epochs",
                                  str(epochs), "--seed", str(seed), "--dataset", "digits"])
    space = SPACES["batchnorm"]
    fixed = {"dataset": "digits", "seed": seed, "max_epochs": epochs}
    # The driver's own searcher (Optuna TPE on the space's define-by-run, learning at step = epoch).
    searcher, _param_space = driver.build_search(args, space, fixed)
    scheduler = driver.build_scheduler(args, epochs)
    return tune.Tuner(
        tune.with_resources(trivial_trainable, {"cpu": args.cpus_per_trial}),
        tune_config=tune.TuneConfig(metric=driver.METRIC, mode=driver.MODE, num_samples=trials,
                                    search_alg=searcher, scheduler=scheduler,
                                    trial_dirname_creator=driver.trial_dirname, reuse_actors=reuse),
        run_config=tune.RunConfig(name="search", storage_path=str(exp),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=0),
    ), args


def write_meta(exp: Path, trials: int, epochs: int, seed: int) -> None:
    import driver

    meta = {"experiment": exp.name, "space": "batchnorm", "dataset": "digits", "max_epochs": epochs,
            "num_samples": trials, "seed": seed, "scheduler": "asha", "search": "optuna",
            "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "argv": ["benchmarks/bookkeeping.py"],
            **driver.provenance()}
    (exp / "experiment.json").write_text(json.dumps(meta, indent=2, default=str))


def subset_experiment(exp: Path, k: int, dest: Path) -> Path:
    """A copy of the experiment holding its first k trial folders (by name), for export scaling."""
    target = dest / f"{exp.name}-{k}"
    (target / "search").mkdir(parents=True)
    shutil.copy(exp / "experiment.json", target / "experiment.json")
    trial_dirs = sorted(d for d in (exp / "search").iterdir() if (d / "params.json").is_file())
    for d in trial_dirs[:k]:
        shutil.copytree(d, target / "search" / d.name, ignore=shutil.ignore_patterns("checkpoint_*"))
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 trials (a smoke run)")
    p.add_argument("--trials", type=int, default=None, help="trials (default 1000; quick 20)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reuse-actors", action="store_true", help="let Tune reuse worker processes across trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    trials = args.trials or (20 if args.quick else 1000)
    work = _common.scratch(NAME, args.workdir)
    exp = work / "trivial"
    exp.mkdir()
    write_meta(exp, trials, args.epochs, args.seed)
    info = _common.machine()

    import os

    # As run_search.py: per-epoch checkpoints snapshot the experiment often, by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_init_s = time.perf_counter() - t0
    tuner, _ = build_tuner(trials, args.epochs, exp, args.reuse_actors, args.seed)
    t0 = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - t0
    ray.shutdown()
    errors = sum(1 for r in grid if r.error)
    requested, trials = trials, len(grid)  # fewer when the run was interrupted (Ctrl-C stops Tune gracefully)

    from analysis.tables import export_tables

    sizes = sorted({max(1, trials // 4), max(1, trials // 2), trials})
    folders = {k: exp if k == trials else subset_experiment(exp, k, work) for k in sizes}
    export_tables(folders[sizes[0]])  # warm-up: first-call imports and pyarrow set-up are not per-trial costs
    export_rows = []
    for k, folder in folders.items():
        t0 = time.perf_counter()
        _, table, epochs_table = export_tables(folder)
        secs = time.perf_counter() - t0
        export_rows.append({"export_trials": table.num_rows, "export_epoch_rows": epochs_table.num_rows,
                            "export_s": round(secs, 3), "export_ms_per_trial": round(1000 * secs / k, 2)})
    per_trial_ms = 1000 * fit_s / trials
    frame = pd.DataFrame(export_rows)
    frame.insert(0, "trials", trials)
    frame.insert(1, "trials_requested", requested)
    frame.insert(1, "epochs", args.epochs)
    frame.insert(2, "reuse_actors", args.reuse_actors)
    frame.insert(3, "errored_trials", errors)
    frame.insert(4, "ray_init_s", round(ray_init_s, 2))
    frame.insert(5, "fit_s", round(fit_s, 1))
    frame.insert(6, "harness_ms_per_trial", round(per_trial_ms, 1))
    frame.insert(7, "target_ms_per_trial", 50)
    frame.insert(8, "met_per_trial", per_trial_ms <= 50)
    # Linear: the cost per trial of the largest export is within 2x of the smallest one's.
    per = frame["export_ms_per_trial"]
    frame["export_linear"] = bool(per.iloc[-1] <= 2 * per.iloc[0]) if len(per) > 1 else None
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(NAME if not args.reuse_actors else f"{NAME}_reuse", frame, args.out,
                 "trivial trials through Tuner + Optuna + ASHA, then the table export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
