#!/usr/bin/env python
"""Scale of the bookkeeping: many trials of a trivial trainable (no TensorFlow) through the harness's
path (Tuner + run_search's Optuna searcher + ASHA + one tune.report with a checkpoint per epoch into a
storage path), then the table export at 250 / 500 / 1,000 trials.

    .venv/bin/python benchmarks/bookkeeping.py            # 1,000 trials x 3 epochs
    .venv/bin/python benchmarks/bookkeeping.py --quick    # 20 trials

The Tuner is built as the driver builds it (its build_search / build_scheduler / trial_dirname,
metric val_accuracy, mode max, the batchnorm space's define-by-run), and an experiment.json like
run_search's is written so analysis.tables.export_tables reads the folder as it reads a real one. The
trainable reports what trainables.callbacks reports (same keys, `epoch` 1-based, a small checkpoint),
with a val_accuracy that is a smooth function of the config, so ASHA and TPE have something to act on.

Workers are reused across trials as run_search reuses them (`--fresh-workers`, as run_search's flag,
starts a fresh Ray actor process per trial, and that process start-up then dominates); what remains is
Tune's, Optuna's and ASHA's own bookkeeping. The trainable checkpoints every `--checkpoint-every`
epochs and at its last, as trainables.callbacks does, and the Tuner's checkpoint settings are
run_search's (tuning.tune_settings); `--before` runs with the settings before issue 11
(one checkpoint kept per trial, which forces an experiment snapshot per checkpoint; Tune's CSV and
TensorBoard loggers on) for the side-by-side figure. Harness time per trial = Tuner.fit wall / trials;
the growth is the time per trial over the last 100 trials (by completion) against the first 100 (the last
and first tenth from 3,000 trials on). Targets: <= 60 ms per trial; last <= 1.3x the first; at the end,
no trial with more checkpoints on the storage than it keeps; export time growing linearly (time per
trial about constant from a quarter of the trials to all of them). `--profile FILE` runs the driver under
cProfile and prints where its time went.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "bookkeeping"
TARGET_MS = 60  # driver time per trial at the default settings (issue 22; issue 11's was 50)


def trivial_trainable(config: dict, checkpoint_every: int = 1) -> None:
    """Reports like trainables.callbacks.EpochReporter, with no TensorFlow: a config-shaped score."""
    import os

    from ray import tune

    lr = float(config["learning_rate"])
    bonus = {"none": 0.0, "before_relu": 0.05, "after_relu": 0.04}.get(config.get("bn_position"), 0.0)
    peak = 0.6 - 0.1 * (math.log10(lr) + 2) ** 2 + bonus  # best near lr = 1e-2
    for epoch in range(1, int(config["max_epochs"]) + 1):
        val = peak * (1 - 0.5**epoch)
        metrics = {
            "epoch": epoch,
            "loss": 1.0 / epoch,
            "accuracy": val,
            "val_loss": 1.0 - val,
            "val_accuracy": val,
            "learning_rate": lr,
            "epoch_time_s": 0.0,
            "gpus": 0.0,
            "node": "bench",
            "pid": os.getpid(),
        }
        if epoch == int(config["max_epochs"]):
            metrics["test_accuracy"] = val
        elif epoch % checkpoint_every:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory(prefix="ckpt-") as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch, "seed": config.get("seed", 0)}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def build_tuner(
    trials: int,
    epochs: int,
    exp: Path,
    reuse: bool,
    seed: int,
    checkpoint_every: int = 1,
    before: bool = False,
    keep_all: bool = False,
    tune_keeps: bool = False,
    extra_callbacks: tuple = (),
    search: str = "optuna",
    study: str = "journal",
):
    """A Tuner as the driver builds one (tuning.tune_settings.build_tuner), with the trivial trainable in
    place of train_trial. `tune_keeps`: the settings of issue 11 for the side-by-side figure (Tune's own
    num_to_keep=2, which forces a snapshot about once per trial, in place of the pruning callback)."""
    from ray import tune

    import run_search
    from driver.request import scheduler_settings
    from search_spaces import SPACES
    from tuning import tune_settings
    from tuning.optuna_search import build_search
    from tuning.schedulers import build_scheduler

    if before:  # the settings before issue 11: one checkpoint kept, Tune's three loggers
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"
        keep, callbacks = 1, []
    else:
        keep, callbacks = tune_settings.CHECKPOINTS_KEPT, tune_settings.result_loggers()
    if keep_all:  # what-if: no num_to_keep, so Tune never forces a snapshot (every checkpoint stays)
        keep = 0
    if before or tune_keeps:  # Tune keeps the checkpoints itself (num_to_keep), forcing its snapshots
        tune_keep = keep
        tune_settings.checkpoint_config = lambda: tune.CheckpointConfig(num_to_keep=tune_keep)
        keep = 0  # and no pruning callback

    request, _ = run_search.request_of(
        ["--space", "batchnorm", "--num-samples", str(trials), "--max-epochs", str(epochs), "--seed", str(seed)]
        + ["--search", search]
    )
    space = SPACES["batchnorm"]
    fixed = {"dataset": "digits", "seed": seed, "max_epochs": epochs}
    # The driver's own searcher (Optuna TPE on the space's define-by-run, learning at step = epoch),
    # and its scheduler at the space's ASHA settings, in the one Tuner builder the driver uses.
    # Its study where the driver keeps it by default: a journal file in the experiment folder (`study`
    # "memory", a what-if: in the searcher itself, pickled into every snapshot of the experiment).
    searcher, _param_space = build_search(request.search, space, fixed, seed=seed, study=journal_of(exp, study))
    scheduler = build_scheduler(request.scheduler, scheduler_settings(request, space, epochs), epochs)
    return tune_settings.build_tuner(
        tune.with_resources(
            tune.with_parameters(trivial_trainable, checkpoint_every=checkpoint_every), {"cpu": request.cpus_per_trial}
        ),
        name="search",
        storage_path=str(exp),
        num_samples=trials,
        search_alg=searcher,
        scheduler=scheduler,
        reuse_actors=reuse,
        keep_checkpoints=keep,
        callbacks=[*callbacks, *extra_callbacks],
    ), request


def growth(grid, k: int) -> tuple[float, float]:
    """Wall time per trial (ms) over the first k and the last k trials, by completion: the gaps
    between consecutive trials' last reports."""
    ends = sorted(float(r.metrics["timestamp"]) for r in grid if r.metrics and "timestamp" in r.metrics)
    if len(ends) < 2 * k + 1:
        return math.nan, math.nan
    return 1000 * (ends[k] - ends[0]) / k, 1000 * (ends[-1] - ends[-1 - k]) / k


def growth_window(trials: int) -> int:
    """The trials compared first against last: 100 (issue 11), a tenth from 3,000 trials on (issue 22's 1,000
    of 10,000)."""
    if trials >= 3000:
        return trials // 10
    return 100 if trials >= 300 else max(1, trials // 3)


PROFILERS: list = []  # the profiler ProfileFrom started (the Tuner runs a pickled copy of the callback)


def profile_from(after: int):
    """A Tune callback that starts a cProfile.Profile in the driver's thread once `after` trials have ended,
    appended to PROFILERS: the Tuner pickles its callbacks when it is built, so the instance returned here
    is not the one that runs."""
    import cProfile

    from ray.tune import Callback

    class ProfileFrom(Callback):
        ended = 0

        def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:  # noqa: ANN003
            self.ended += 1
            if self.ended == after:
                PROFILERS.append(cProfile.Profile())
                PROFILERS[-1].enable()

    return ProfileFrom()


def snapshot_counter() -> list:
    """Every BudgetedSnapshots the run creates (benchmark instrumentation only): how many snapshots the trials'
    checkpoints forced, how many waited for the budget, and the time spent in snapshots."""
    from tuning import snapshots

    made: list = []
    original = snapshots.BudgetedSnapshots.__init__

    def init(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        original(self, *args, **kwargs)
        made.append(self)

    snapshots.BudgetedSnapshots.__init__ = init  # type: ignore[method-assign]
    return made


def journal_of(exp: Path, study: str) -> Any:
    """The study as the driver opens it by default (tuning.study.open_study): a journal in `exp`; None for
    an in-memory study."""
    if study == "memory":
        return None
    if study == "optuna-journal":  # what-if: Optuna's own JournalStorage, reads walking every trial
        import optuna
        from optuna.storages.journal import JournalFileBackend

        from tuning import journal_storage

        journal_storage.open_journal = lambda path: optuna.storages.JournalStorage(JournalFileBackend(path))
    from tuning.optuna_search import STORAGE_ENV
    from tuning.study import JOURNAL_FILE, OptunaStudy

    journal = OptunaStudy(exp.name, str(exp / JOURNAL_FILE))
    os.environ[STORAGE_ENV] = journal.spec  # as open_study: where a searcher Tune restores finds it
    return journal


def write_meta(exp: Path, trials: int, epochs: int, seed: int) -> None:
    from experiment import folder

    meta = {
        "space": "batchnorm",
        "dataset": "digits",
        "max_epochs": epochs,
        "num_samples": trials,
        "seed": seed,
        "scheduler": "asha",
        "search": "optuna",
        "cpus_per_trial": 1.0,
        "gpus_per_trial": 0.0,
        "argv": ["benchmarks/bookkeeping.py"],
    }
    folder.write_record(folder.locate(str(exp.parent), exp.name), meta)


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
    p.add_argument(
        "--fresh-workers",
        action="store_true",
        help="a fresh worker process per trial "
        "(run_search --fresh-workers); default: workers reused, as run_search does",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        metavar="EPOCHS",
        help="checkpoint period of the trainable, as run_search --checkpoint-every",
    )
    p.add_argument("--before", action="store_true", help="the Tune settings before issue 11 (see above)")
    p.add_argument(
        "--keep-all-checkpoints",
        action="store_true",
        help="what-if: CheckpointConfig(num_to_keep=None), so no snapshot is forced (disk keeps every checkpoint)",
    )
    p.add_argument(
        "--tune-keeps",
        action="store_true",
        help="the settings of issue 11: Tune's num_to_keep=2 (snapshots forced) instead of the pruning callback",
    )
    p.add_argument(
        "--tune-upload",
        action="store_true",
        help="what-if: Tune's own snapshot upload (state files written in place) instead of tuning.atomic_storage's",
    )
    p.add_argument(
        "--search",
        choices=("optuna", "random"),
        default="optuna",
        help="the driver's searcher, as run_search --search (random: what-if, asks that cost nothing)",
    )
    p.add_argument(
        "--study",
        choices=("journal", "optuna-journal", "memory"),
        default="journal",
        help="where the Optuna study lives: a journal file in the experiment folder, as run_search's default "
        "(tuning.journal_storage); what-ifs: optuna-journal, Optuna's own JournalStorage on it; memory, in the "
        "searcher (pickled into every snapshot; this script's only way before issue 22's fifth look)",
    )
    p.add_argument("--profile", default=None, metavar="FILE", help="cProfile the driver into FILE")
    p.add_argument(
        "--profile-from",
        type=int,
        default=0,
        metavar="N",
        help="with --profile: only once N trials have ended (where the driver's time per trial has grown)",
    )
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

    if args.tune_upload:
        from tuning import atomic_storage

        atomic_storage.use_atomic_state_sync = lambda _storage: None  # the controller keeps Tune's syncer
    ray_init_s = _common.start_ray()
    reuse = not args.fresh_workers
    profiler = None
    extra: tuple = ()
    if args.profile and args.profile_from:
        extra = (profile_from(args.profile_from),)
    elif args.profile:
        import cProfile

        profiler = cProfile.Profile()
    tuner, _ = build_tuner(
        trials,
        args.epochs,
        exp,
        reuse,
        args.seed,
        args.checkpoint_every,
        args.before,
        args.keep_all_checkpoints,
        args.tune_keeps,
        extra,
        args.search,
        args.study,
    )
    managers = snapshot_counter()
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - t0
    if extra:
        profiler = PROFILERS[-1] if PROFILERS else None
    if profiler is not None:
        import pstats

        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(40)
    ray.shutdown()
    errors = sum(1 for r in grid if r.error)
    # Disk at the end: checkpoint folders per trial on the storage (the target: at most the kept ones).
    per_trial = [len(list(d.glob("checkpoint_*"))) for d in (exp / "search").iterdir() if d.is_dir()]
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
        export_rows.append(
            {
                "export_trials": table.num_rows,
                "export_epoch_rows": epochs_table.num_rows,
                "export_s": round(secs, 3),
                "export_ms_per_trial": round(1000 * secs / k, 2),
            }
        )
    per_trial_ms = 1000 * fit_s / trials
    window = growth_window(trials)
    first_ms, last_ms = growth(grid, window)
    frame = pd.DataFrame(export_rows)
    frame.insert(0, "trials", trials)
    frame.insert(1, "trials_requested", requested)
    frame.insert(1, "epochs", args.epochs)
    frame.insert(2, "reuse_actors", reuse)
    frame.insert(3, "checkpoint_every", args.checkpoint_every)
    settings = "before" if args.before else "keep_all" if args.keep_all_checkpoints else None
    frame.insert(4, "settings", settings or ("issue11" if args.tune_keeps else "issue22"))
    frame.insert(5, "snapshot_upload", "tune" if args.tune_upload else "atomic")
    frame.insert(6, "search", args.search)
    frame.insert(7, "study", args.study)
    frame["checkpoints_per_trial_max"] = max(per_trial, default=0)
    frame["checkpoints_per_trial_mean"] = round(sum(per_trial) / max(1, len(per_trial)), 2)
    frame.insert(3, "errored_trials", errors)
    frame.insert(4, "ray_init_s", round(ray_init_s, 2))
    frame.insert(5, "fit_s", round(fit_s, 1))
    frame.insert(6, "harness_ms_per_trial", round(per_trial_ms, 1))
    frame.insert(7, "target_ms_per_trial", TARGET_MS)
    frame.insert(8, "met_per_trial", per_trial_ms <= TARGET_MS)
    frame.insert(9, "first_k_ms_per_trial", round(first_ms, 1))
    frame.insert(10, "last_k_ms_per_trial", round(last_ms, 1))
    frame.insert(11, "last_over_first", round(last_ms / first_ms, 2) if first_ms else None)
    frame.insert(12, "met_growth", bool(first_ms and last_ms <= 1.3 * first_ms))
    frame.insert(13, "growth_window_trials", window)
    # The snapshots the trials' checkpoints forced within the budget (tuning.snapshots), those that waited.
    frame["forced_snapshots"] = sum(m.forced for m in managers) if managers else None
    frame["deferred_snapshots"] = sum(m.deferred for m in managers) if managers else None
    frame["snapshot_s"] = round(sum(m.spent for m in managers), 1) if managers else None
    # Linear: the cost per trial of the largest export is within 2x of the smallest one's.
    per = frame["export_ms_per_trial"]
    frame["export_linear"] = bool(per.iloc[-1] <= 2 * per.iloc[0]) if len(per) > 1 else None
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(
        NAME + ("" if reuse else "_fresh") + ("_before" if args.before else "") + ("_tune_keeps" * args.tune_keeps),
        frame,
        args.out,
        "trivial trials through Tuner + Optuna + ASHA, then the table export",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
