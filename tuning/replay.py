"""The replay backend: a Tune trainable that reports recorded learning curves instead of training.

A curve set is a Parquet table, one row per recorded configuration and epoch (CURVE_COLUMNS plus
one column per knob), built from the tables of finished experiments (`record_curves`). The
trainable `replay_trial` takes the config Tune hands it, finds the recorded configuration nearest
to it (same categorical knobs first, then the nearest float knobs on a log scale: the searcher
samples a continuous learning rate, the table holds a few dozen), and reports that configuration's
epochs one by one, as `train_trial` reports trained ones: same keys, `epoch` as ASHA's time unit,
`test_accuracy` at the full budget. An epoch costs microseconds, so the searcher and scheduler
(the production ones, run by `run_replay`) can be compared over many seeds.

`run_replay` runs one Tune experiment on the replay trainable into an experiment folder laid out as
run_search.py lays it out (experiment.json, search/<trial_id>/), so analysis.tables builds its
tables. No TensorFlow here; Ray and Optuna are imported where a run starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.tables import CONFIG_VERSION
from experiment import folder
from trainables.config import knob_types

# Per-epoch columns of a curve set (epochs.parquet's, with the optimizer's per-epoch learning rate
# renamed: `learning_rate` is the knob), plus the configuration's id and its test accuracy.
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s")
CURVE_COLUMNS = ("config_id", "epoch", *EPOCH_METRICS, "epoch_learning_rate", "test_accuracy", "source")
NOT_MATCHED = ("seed", "max_epochs", "dataset", "patience")  # run settings, not what a searcher picks
FINAL = "val_accuracy"  # what the searcher and ASHA see, and what regret is measured on


def record_curves(experiments: Sequence[str | Path], phase: str | None = None) -> pd.DataFrame:
    """The curve set of the trials that ran their full budget in these experiment folders (each
    with tables/trials.parquet and epochs.parquet): one row per trial and epoch."""
    from analysis.tables import read_table

    frames = []
    for exp in experiments:
        trials, epochs = read_table(exp, "trials"), read_table(exp, "epochs")
        done = trials[(trials["status"] == "completed") & (trials["phase"] == phase if phase else True)]
        knobs = [k for k in knob_types() if k in done]
        ep = epochs[epochs["trial_id"].isin(done["trial_id"])].rename(columns={"learning_rate": "epoch_learning_rate"})
        merged = ep.merge(done[["trial_id", "test_accuracy", *knobs]], on="trial_id")
        merged["config_id"] = f"{Path(exp).name}/" + merged["trial_id"]
        merged["source"] = Path(exp).name
        frames.append(merged[[*CURVE_COLUMNS, *knobs]])
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["config_id", "epoch"], kind="stable").reset_index(drop=True)


def load_curves(path: str | Path) -> pd.DataFrame:
    """A curve set from Parquet; ValueError (one line) when it is not one."""
    table = pd.read_parquet(path)
    missing = [c for c in CURVE_COLUMNS if c not in table]
    if missing:
        raise ValueError(
            f"{path} is not a curve set: it lacks columns {missing} (write one with tuning.replay.record_curves)"
        )
    return table


def matched_knobs(curves: pd.DataFrame) -> list[str]:
    """The knobs that vary among the recorded configurations: what a lookup matches on."""
    configs = configs_of(curves)
    return [k for k in knob_types() if k in configs and k not in NOT_MATCHED and configs[k].nunique(dropna=True) > 1]


def configs_of(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per recorded configuration: its knobs, final epoch and final val_accuracy, by config_id."""
    last = curves.sort_values("epoch").groupby("config_id").tail(1).set_index("config_id").sort_index()
    return last.rename(columns={"epoch": "epochs", FINAL: "final"})


def nearest(params: Mapping[str, Any], configs: pd.DataFrame, knobs: Sequence[str]) -> str:
    """The config_id nearest to params: fewest categorical mismatches, then the smallest summed
    distance of float knobs (|log10 ratio| for positive values, else absolute); ties to the first id."""
    types = knob_types()
    mismatch = np.zeros(len(configs))
    distance = np.zeros(len(configs))
    for k in knobs:
        want, have = params.get(k), configs[k]
        if types[k] is float and want is not None and have.notna().all():
            a, b = float(want), have.to_numpy(float)
            distance += np.abs(np.log10(a) - np.log10(b)) if a > 0 and (b > 0).all() else np.abs(a - b)
        else:
            mismatch += np.array([not (_same(v, want)) for v in have], dtype=float)
    order = np.lexsort((np.arange(len(configs)), distance, mismatch))
    return str(configs.index[order[0]])


def _same(a: Any, b: Any) -> bool:
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    return str(a) == str(b)


def replay_trial(params: dict[str, Any], curves: pd.DataFrame, delay_s: float = 0.0) -> None:
    """The Ray Tune function trainable: report the recorded epochs of the nearest recorded config,
    up to params['max_epochs'], one report per epoch (`delay_s` seconds apart, 0 = as fast as Tune takes them)."""
    from ray import tune

    from trainables.config import TrialConfig

    config = TrialConfig.from_params(params)  # unknown keys fail loudly, as in train_trial
    configs = configs_of(curves)
    config_id = nearest(params, configs, matched_knobs(curves))
    rows = curves[curves["config_id"] == config_id].sort_values("epoch")
    rows = rows[rows["epoch"] <= config.max_epochs]
    full = int(rows["epoch"].max()) >= config.max_epochs
    for row in rows.itertuples(index=False):
        report = {
            "epoch": int(row.epoch),
            **{m: float(getattr(row, m)) for m in EPOCH_METRICS},
            "learning_rate": float(row.epoch_learning_rate),
            "gpus": 0.0,
            "node": "replay",
            "replayed_config": config_id,
        }
        if full and int(row.epoch) == config.max_epochs and row.test_accuracy == row.test_accuracy:
            report["test_accuracy"] = float(row.test_accuracy)
        if delay_s:
            time.sleep(delay_s)
        tune.report(report)


# ---------------------------------------------------------------- one replayed experiment

SEARCHERS = ("fidelity", "stock", "random")  # FidelityOptunaSearch TPE, Ray's stock OptunaSearch TPE, random


def build_searcher(
    kind: str, space: Any, fixed: Mapping[str, Any], seed: int, max_epochs: int, metric: str = FINAL, mode: str = "max"
) -> Any:
    """The production searchers: 'fidelity' and 'random' as run_search.py builds them; 'stock' is
    Ray's OptunaSearch on the same define-by-run space with the same TPE sampler and seed."""
    import functools

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from tuning.optuna_search import build_optuna_search, define_with_fixed

    if kind == "stock":
        return OptunaSearch(
            space=functools.partial(define_with_fixed, space=space, fixed=dict(fixed)),
            metric=metric,
            mode=mode,
            sampler=optuna.samplers.TPESampler(seed=seed),
        )
    if kind not in SEARCHERS:
        raise ValueError(f"searcher must be one of {', '.join(SEARCHERS)}, got {kind!r}")
    return build_optuna_search(
        space, fixed, metric=metric, mode=mode, seed=seed, random=kind == "random", max_epochs=max_epochs
    )


def _tune_hooks(budget_epochs: int | None) -> tuple[Any, Any]:
    """(callback that logs every reported epoch in arrival order, stopper that ends the run once
    budget_epochs epochs were reported in all)."""
    from ray import tune
    from ray.tune.stopper import Stopper

    class EpochLog(tune.Callback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if "epoch" in result:
                self.rows.append(
                    {
                        "trial_id": trial.trial_id,
                        "epoch": int(result["epoch"]),
                        FINAL: result.get(FINAL),
                        "config_id": result.get("replayed_config"),
                    }
                )

    class EpochBudget(Stopper):
        def __init__(self) -> None:
            self.spent = 0

        def __call__(self, trial_id: str, result: dict) -> bool:
            self.spent += "epoch" in result
            return False

        def stop_all(self) -> bool:
            return budget_epochs is not None and self.spent >= budget_epochs

    return EpochLog(), EpochBudget()


def run_replay(
    curves: pd.DataFrame,
    space: Any,
    *,
    searcher: str,
    scheduler: str,
    settings: Any,
    seed: int,
    storage: str | Path,
    name: str,
    num_samples: int,
    budget_epochs: int | None = None,
    max_concurrent: int = 4,
    configs: Sequence[Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """One Tune experiment on the replay trainable, with the production searcher (or, given
    `configs`, exactly those configs, as --search grid runs them) and scheduler; writes
    `<storage>/<name>/experiment.json` and `search/<trial_id>/` and returns the reported epochs in
    arrival order (trial_id, epoch, val_accuracy, config_id). Ray must be initialised."""
    import numpy.random
    from ray import tune

    from tuning.optuna_search import fixed_configs_search
    from tuning.schedulers import build_scheduler, record
    from tuning.tune_settings import build_tuner

    max_epochs = int(curves["epoch"].max())
    dataset = str(curves["dataset"].iloc[0]) if "dataset" in curves else "digits"
    fixed = {"dataset": dataset, "seed": seed, "max_epochs": max_epochs}
    exp = Path(storage) / name
    exp.mkdir(parents=True, exist_ok=True)
    folder.write_record(
        folder.locate(str(storage), name),
        {
            "space": space.name,
            "dataset": dataset,
            "max_epochs": max_epochs,
            "num_samples": num_samples,
            "seed": seed,
            "scheduler": scheduler,
            "search": searcher,
            "backend": "replay",
            "scheduler_settings": record(scheduler, settings, max_epochs, FINAL, "max"),
            "config_version": CONFIG_VERSION,
        },
    )
    if configs is not None:
        search_alg, param_space = fixed_configs_search([{**c, **fixed} for c in configs])
        num_samples = len(configs)
    else:
        search_alg, param_space = build_searcher(searcher, space, fixed, seed, max_epochs), None
    numpy.random.seed(seed)  # Ray's ASHA draws each trial's bracket from NumPy's global generator
    log, stopper = _tune_hooks(budget_epochs)
    tuner = build_tuner(
        tune.with_parameters(replay_trial, curves=curves),
        name="search",
        storage_path=str(exp),
        num_samples=num_samples,
        search_alg=search_alg,
        scheduler=build_scheduler(scheduler, settings, max_epochs),
        param_space=param_space,
        max_concurrent=max_concurrent,
        reuse_actors=True,  # no GPU memory to hand back: one worker replays trial after trial
        keep_checkpoints=1,
        callbacks=[log],
        stop=stopper,
        metric=FINAL,
    )
    tuner.fit()
    return pd.DataFrame(log.rows, columns=["trial_id", "epoch", FINAL, "config_id"])


def simulate(
    curves: pd.DataFrame,
    space: Any,
    *,
    searcher: str,
    scheduler: str,
    settings: Any,
    seed: int,
    num_samples: int,
    budget_epochs: int | None = None,
    workers: int = 4,
) -> pd.DataFrame:
    """The same experiment as run_replay, without Tune's execution engine: the production searcher
    and scheduler objects get the calls Tune's controller makes, in the order it makes them
    (scheduler.on_trial_result, then searcher.on_trial_result unless the answer is STOP; on a stop
    or the last epoch, scheduler.on_trial_complete then searcher.on_trial_complete). `workers`
    trials run at once; every epoch takes one unit of simulated time, so the interleaving (ASHA is
    asynchronous) is fixed by the seed. Thousands of epochs a second, for many-seed benchmarks;
    tests check it takes Tune's decisions. Returns the reported epochs in order, as run_replay."""
    import heapq
    from types import SimpleNamespace

    import numpy.random
    from ray.tune.schedulers import TrialScheduler

    from tuning.schedulers import build_scheduler

    max_epochs = int(curves["epoch"].max())
    dataset = str(curves["dataset"].iloc[0]) if "dataset" in curves else "digits"
    fixed = {"dataset": dataset, "seed": seed, "max_epochs": max_epochs}
    alg = build_searcher(searcher, space, fixed, seed, max_epochs)
    sched = build_scheduler(scheduler, settings, max_epochs, metric=FINAL, mode="max")
    numpy.random.seed(seed)  # ASHA's bracket draw, as in run_replay
    configs, knobs = configs_of(curves), matched_knobs(curves)
    values = {cid: g.sort_values("epoch")[FINAL].to_numpy(float) for cid, g in curves.groupby("config_id")}
    queue: list[tuple[int, int, str]] = []  # (time its next epoch ends, start order, trial id)
    running: dict[str, tuple[Any, str, int]] = {}  # trial id -> (trial, config id, epochs done)
    log: list[tuple[str, int, float, str]] = []
    started = 0

    def start(now: int) -> None:
        nonlocal started
        trial_id = f"{started:05d}"
        params = alg.suggest(trial_id)
        started += 1
        if not isinstance(params, dict):
            return
        trial = SimpleNamespace(trial_id=trial_id)
        sched.on_trial_add(None, trial)  # type: ignore[arg-type]  # no TuneController: replayed
        running[trial_id] = (trial, nearest(params, configs, knobs), 0)
        heapq.heappush(queue, (now + 1, started, trial_id))

    now = 0
    while budget_epochs is None or len(log) < budget_epochs:
        while len(running) < workers and started < num_samples:
            start(now)
        if not queue:
            break
        now, order, trial_id = heapq.heappop(queue)
        trial, config_id, done = running[trial_id]
        epoch = done + 1
        result = {
            "epoch": epoch,
            "training_iteration": epoch,
            FINAL: float(values[config_id][epoch - 1]),
            "trial_id": trial_id,
            "replayed_config": config_id,
        }
        decision = sched.on_trial_result(None, trial, result)  # type: ignore[arg-type]
        if decision != TrialScheduler.STOP:
            alg.on_trial_result(trial_id, result)
        log.append((trial_id, epoch, float(values[config_id][epoch - 1]), config_id))
        if decision == TrialScheduler.STOP or epoch >= min(max_epochs, len(values[config_id])):
            sched.on_trial_complete(None, trial, result)  # type: ignore[arg-type]
            alg.on_trial_complete(trial_id, result=result)
            del running[trial_id]
        else:
            running[trial_id] = (trial, config_id, epoch)
            heapq.heappush(queue, (now + 1, order, trial_id))
    return pd.DataFrame(log, columns=["trial_id", "epoch", FINAL, "config_id"])
