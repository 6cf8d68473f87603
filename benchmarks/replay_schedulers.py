#!/usr/bin/env python
"""Searchers x schedulers on recorded learning curves (the replay backend), at an equal epoch budget.

    .venv/bin/python benchmarks/replay_schedulers.py                 # the stored digits curve set, 20 seeds
    .venv/bin/python benchmarks/replay_schedulers.py --curves benchmarks/results/curves_X.parquet --space S
    .venv/bin/python benchmarks/replay_schedulers.py --quick         # 2 seeds, 3 settings, small budget

Each run is a real Ray Tune experiment (tuning.replay.run_replay): the production searcher
(`fidelity`: tuning.optuna_search.FidelityOptunaSearch with TPE, as run_search.py builds it;
`stock`: Ray's own OptunaSearch with the same TPE sampler and seed; `random`: run_search's
--search random) proposes configs of the space; the replay trainable reports the recorded epochs of
the nearest recorded configuration; the scheduler is FIFO or tuning.schedulers' ASHA at each
candidate setting. A run ends once --budget x max_epochs epochs were reported in all (FIFO: --budget
full trainings). 4 trials run at once, as on a small cluster; ASHA is asynchronous, so arrival order
matters. The default engine, tuning.replay.simulate, makes the calls Tune's controller makes on
the same searcher and scheduler objects, without Tune's actors (tests/trainables/test_replay.py
checks it takes Tune's decisions), with every epoch one unit of simulated time; --engine tune runs
each seed as a real Tune experiment (seconds per run instead of milliseconds).

Figure of merit: regret of the configuration the run would hand over, after each number of epochs
spent: the recorded final val_accuracy of the best recorded configuration minus that of the run's
incumbent (the trial that reached the most epochs, best val_accuracy there: the harness's ranking at
matched budget). In accuracy points (0..100) and normalised by the table's range (best - worst final).
Rows: mean, std and quartiles over seeds after every max_epochs epochs spent; seed-paired differences
against FIFO (same searcher) and fidelity against stock (same scheduler) with 95 % t-intervals.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "replay_schedulers"
DEFAULT_CURVES = _common.RESULTS / "curves_digits_basenet.parquet"
# (label, scheduler, grace, rf, brackets, stop_on): FIFO and ASHA at the candidate settings.
SETTINGS = [
    ("fifo", "fifo", 1, 3, 1, "last"),
    ("asha g1 b1", "asha", 1, 3, 1, "last"),
    ("asha g2 b1", "asha", 2, 3, 1, "last"),
    ("asha g3 b1", "asha", 3, 3, 1, "last"),
    ("asha g1 b3", "asha", 1, 3, 3, "last"),
    ("asha g2 b3", "asha", 2, 3, 3, "last"),
    ("asha g3 b3", "asha", 3, 3, 3, "last"),
    ("asha g1 b1 best", "asha", 1, 3, 1, "best"),
    ("asha g2 b1 best", "asha", 2, 3, 1, "best"),
]
QUICK_SETTINGS = ["fifo", "asha g1 b1", "asha g2 b1"]


def synthetic_curves(n: int = 24, epochs: int = 9) -> pd.DataFrame:
    """A generated curve set over the basenet space (for --quick without a recorded set): BaseNet SGD at
    n learning rates, curves that cross (high rates start fast and end lower)."""
    from trainables.config import TrialConfig

    rows = []
    rng = np.random.default_rng(0)
    for i, lr in enumerate(np.logspace(-4, -1, n)):
        knobs = TrialConfig(
            model="basenet", dataset="digits", max_epochs=epochs, optimizer="sgd", learning_rate=float(lr)
        ).to_row()
        start, end = 0.1 + 0.5 * i / n, 0.9 - 0.6 * abs(i / n - 0.6)
        for e in range(1, epochs + 1):
            val = start + (end - start) * (1 - np.exp(-e / 3)) + rng.normal(0, 0.01)
            rows.append(
                {
                    "config_id": f"syn/{i:02d}",
                    "epoch": e,
                    "loss": 1 - val,
                    "accuracy": val,
                    "val_loss": 1 - val,
                    "val_accuracy": val,
                    "epoch_time_s": 0.1,
                    "epoch_learning_rate": float(lr),
                    "test_accuracy": val,
                    "source": "synthetic",
                    **knobs,
                }
            )
    return pd.DataFrame(rows)


def as_tables(curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A curve set as the (trials, epochs) tables analysis.rungs reads: one FIFO trial per recorded config."""
    max_epochs = int(curves["epoch"].max())
    trials = pd.DataFrame(
        {
            "trial_id": sorted(curves["config_id"].unique()),
            "phase": "search",
            "status": "completed",
            "max_epochs": max_epochs,
        }
    )
    return trials, curves.rename(columns={"config_id": "trial_id"})[["trial_id", "epoch", "val_accuracy"]]


def rung_table(curves: pd.DataFrame, name: str) -> pd.DataFrame:
    """analysis.rungs on a curve set: what ASHA at each grace period and metric would have judged."""
    from analysis import rungs

    trials, epochs = as_tables(curves)
    rows = []
    for grace in (1, 2, 3):
        for stop_on in ("last", "best"):
            settings = {
                "kind": "fifo",
                "grace_period": grace,
                "reduction_factor": 3,
                "brackets": 1,
                "stop_on": stop_on,
                "max_t": int(curves["epoch"].max()),
            }
            for f in rungs.rung_figures(trials, epochs, settings):
                if f["final"] is None:
                    continue
                rows.append(
                    {
                        "curves": name,
                        "configs": len(trials),
                        "grace_period": grace,
                        "stop_on": stop_on,
                        "rung": f["rung"],
                        "final_epoch": f["final"],
                        "trials": f["n"],
                        "spearman": round(f["spearman"], 3) if f["spearman"] is not None else None,
                        "kendall": round(f["kendall"], 3) if f["kendall"] is not None else None,
                        "top_k_behind": f["behind"],
                        "k": f["k"],
                        "poor": f["warning"] is not None,
                    }
                )
    return pd.DataFrame(rows)


def regret_curve(log: pd.DataFrame, finals: pd.Series, budget: int, points: np.ndarray) -> np.ndarray:
    """Regret (best recorded final - final of the incumbent's config) after each number of epochs in points."""
    best = finals.max()
    log = log.head(budget).reset_index(drop=True)
    out = np.full(len(points), np.nan)
    deepest: dict[str, tuple[int, float, str]] = {}  # trial -> (epoch, val_accuracy, config)
    j = 0
    for i, row in enumerate(log.itertuples(index=False), 1):
        deepest[row.trial_id] = (row.epoch, row.val_accuracy, row.config_id)
        while j < len(points) and points[j] <= i:
            out[j] = best - finals[max(deepest.values(), key=lambda t: (t[0], t[1]))[2]]
            j += 1
    if j < len(points) and deepest:  # the run ended early (fewer configs than the budget): keep the last
        out[j:] = best - finals[max(deepest.values(), key=lambda t: (t[0], t[1]))[2]]
    return out


def t_interval(diffs: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    n = len(diffs)
    mean = float(np.mean(diffs))
    if n < 2 or np.std(diffs) == 0:
        return mean, mean, mean
    half = stats.t.ppf(0.975, n - 1) * np.std(diffs, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--curves", type=Path, default=DEFAULT_CURVES, help="a curve set (tuning.replay)")
    p.add_argument("--space", default="basenet", help="the search space the curves were recorded from")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=10, help="epoch budget, in full trainings (x max_epochs)")
    p.add_argument("--searchers", default="fidelity,stock,random")
    p.add_argument("--settings", default=None, help="comma-separated labels of SETTINGS (default: all)")
    p.add_argument("--max-concurrent", type=int, default=4, help="trials at once")
    p.add_argument(
        "--engine",
        choices=("sim", "tune"),
        default="sim",
        help="sim: tuning.replay.simulate (the production searcher and scheduler, Tune's call "
        "order, no Tune engine; ms per run); tune: a real Tune experiment per run (seconds)",
    )
    p.add_argument("--quick", action="store_true", help="2 seeds, 3 settings, budget 4: a smoke run")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use a generated curve set (crossing curves over the basenet space) instead of --curves",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None, help="PNG (default: beside --out)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument(
        "--rung-curves",
        type=Path,
        action="append",
        default=[],
        help="more curve sets to run only the rung diagnostics on (e.g. the CIFAR reference runs)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.budget = 2, 4
        args.settings = args.settings or ",".join(QUICK_SETTINGS)
    labels = args.settings.split(",") if args.settings else [s[0] for s in SETTINGS]
    unknown = [lb for lb in labels if lb not in {s[0] for s in SETTINGS}]
    if unknown:
        print(f"replay_schedulers.py: error: --settings {unknown}: known {[s[0] for s in SETTINGS]}", file=sys.stderr)
        return 2
    if not args.synthetic and not args.curves.is_file():
        print(f"replay_schedulers.py: error: --curves {args.curves}: no such file", file=sys.stderr)
        return 2

    import optuna
    import ray

    from search_spaces import SPACES
    from search_spaces.base import SchedulerSettings
    from tuning import replay

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = synthetic_curves() if args.synthetic else replay.load_curves(args.curves)
    if args.synthetic:
        args.curves = Path("synthetic")
    space = SPACES[args.space]
    finals = replay.configs_of(curves)["final"]
    max_epochs = int(curves["epoch"].max())
    budget = args.budget * max_epochs
    points = max_epochs * np.arange(1, args.budget + 1)  # after each full training's worth of epochs
    spread = finals.max() - finals.min()
    work = _common.scratch(NAME, args.workdir)
    settings = [s for s in SETTINGS if s[0] in labels]
    searchers = args.searchers.split(",")
    print(
        f"{len(finals)} recorded configs x {max_epochs} epochs from {args.curves.name}; best final "
        f"{finals.max():.4f}, worst {finals.min():.4f}; budget {budget} epochs; {args.seeds} seeds x "
        f"{len(searchers)} searchers x {len(settings)} settings",
        flush=True,
    )

    logging.getLogger("ray").setLevel(logging.ERROR)
    if args.engine == "tune":
        ray.init(
            address="local",
            num_cpus=args.max_concurrent,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
    curves_rows, runs = [], []
    started = time.perf_counter()
    try:
        for seed in range(args.seeds):
            for searcher in searchers:
                for label, kind, grace, rf, brackets, stop_on in settings:
                    sched = SchedulerSettings(
                        grace_period=grace, reduction_factor=rf, brackets=brackets, stop_on=stop_on
                    )
                    name = f"{searcher}-{label.replace(' ', '-')}-s{seed}"
                    t0 = time.perf_counter()
                    if args.engine == "sim":
                        log = replay.simulate(
                            curves,
                            space,
                            searcher=searcher,
                            scheduler=kind,
                            settings=sched,
                            seed=seed,
                            num_samples=budget,
                            budget_epochs=budget,
                            workers=args.max_concurrent,
                        )
                    else:
                        with contextlib.redirect_stdout(io.StringIO()):  # Tune's per-run banner
                            log = replay.run_replay(
                                curves,
                                space,
                                searcher=searcher,
                                scheduler=kind,
                                settings=sched,
                                seed=seed,
                                storage=work,
                                name=name,
                                num_samples=budget,
                                budget_epochs=budget,
                                max_concurrent=args.max_concurrent,
                            )
                        shutil.rmtree(work / name, ignore_errors=True)
                    regret = regret_curve(log, finals, budget, points)
                    runs.append(
                        {
                            "searcher": searcher,
                            "setting": label,
                            "seed": seed,
                            "trials": log["trial_id"].nunique(),
                            "epochs": min(len(log), budget),
                            "regret": regret[-1],
                            "wall_s": time.perf_counter() - t0,
                        }
                    )
                    curves_rows += [
                        {
                            "searcher": searcher,
                            "setting": label,
                            "seed": seed,
                            "epochs_spent": int(e),
                            "regret": float(r),
                        }
                        for e, r in zip(points, regret, strict=False)
                    ]
            done = time.perf_counter() - started
            print(f"seed {seed} done, {done:.0f} s so far", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    per_seed = pd.DataFrame(curves_rows)
    grouped = per_seed.groupby(["searcher", "setting", "epochs_spent"])["regret"]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    table["q25"] = grouped.quantile(0.25).to_numpy()
    table["q75"] = grouped.quantile(0.75).to_numpy()
    table["mean_regret_points"] = (100 * table["mean"]).round(3)
    table["std_points"] = (100 * table["std"]).round(3)
    table["mean_normalised"] = (table["mean"] / spread).round(4) if spread else np.nan
    table = table.rename(columns={"count": "seeds"})
    run_frame = pd.DataFrame(runs)
    trials = run_frame.groupby(["searcher", "setting"])["trials"].mean()
    table["mean_trials"] = [
        round(trials[(s, lb)], 1) for s, lb in zip(table["searcher"], table["setting"], strict=False)
    ]
    table["found_best_share"] = [
        float(
            (
                per_seed[(per_seed.searcher == s) & (per_seed.setting == lb) & (per_seed.epochs_spent == e)]["regret"]
                <= 1e-12
            ).mean()
        )
        for s, lb, e in zip(table["searcher"], table["setting"], table["epochs_spent"], strict=False)
    ]
    table["budget_epochs"], table["max_epochs"], table["configs"] = budget, max_epochs, len(finals)
    table["curves"], table["engine"], table["workers"] = args.curves.name, args.engine, args.max_concurrent
    for k, v in _common.machine().items():
        table[k] = v
    out_cols = [
        "curves",
        "engine",
        "workers",
        "configs",
        "max_epochs",
        "budget_epochs",
        "searcher",
        "setting",
        "epochs_spent",
        "seeds",
        "mean_regret_points",
        "std_points",
        "q25",
        "q75",
        "mean_normalised",
        "found_best_share",
        "mean_trials",
        "host",
        "cpus",
        "date_utc",
        "loadavg_1m",
        "loadavg_5m",
    ]
    out = args.out or _common.RESULTS / f"{NAME}.csv"
    _common.emit(
        NAME,
        table[out_cols][table["epochs_spent"] == budget],
        out=out.with_name(out.stem + "_final.csv"),
        title=f"{NAME}: regret at the full budget ({budget} epochs)",
    )
    _common.emit(NAME, table[out_cols], out=out, title=f"{NAME}: regret vs epochs spent")
    _common.emit(
        NAME,
        paired(per_seed, budget, searchers, [s[0] for s in settings]),
        out=out.with_name(out.stem + "_paired.csv"),
        title=f"{NAME}: seed-paired differences at {budget} epochs",
    )
    rung_frames = [rung_table(curves, args.curves.name)]
    rung_frames += [rung_table(replay.load_curves(path), path.name) for path in args.rung_curves]
    _common.emit(
        NAME,
        pd.concat(rung_frames, ignore_index=True),
        out=out.with_name(out.stem + "_rungs.csv"),
        title=f"{NAME}: rung diagnostics (analysis.rungs) of the curve sets, FIFO what-if",
    )
    # Before `workers` full trainings' worth of epochs no FIFO trial can have finished, and the incumbent
    # is whichever partial trial started first: the figure starts where every scheduler has a finished one.
    figure(
        table[table["epochs_spent"] >= min(budget, args.max_concurrent * max_epochs)],
        args.figure or out.with_suffix(".png"),
        searchers,
        [s[0] for s in settings],
        budget,
    )
    print(f"total wall {time.perf_counter() - started:.0f} s; median run {run_frame['wall_s'].median():.1f} s")
    return 0


def paired(per_seed: pd.DataFrame, budget: int, searchers: list[str], labels: list[str]) -> pd.DataFrame:
    """Regret differences at the full budget, paired by seed: each ASHA setting minus FIFO (same
    searcher), and fidelity minus stock (same setting). Negative = the first has less regret."""
    at = per_seed[per_seed["epochs_spent"] == budget].set_index(["searcher", "setting", "seed"])["regret"].sort_index()
    rows = []
    pairs = [((s, lb), (s, "fifo")) for s in searchers for lb in labels if lb != "fifo" and "fifo" in labels]
    if {"fidelity", "stock"} <= set(searchers):
        pairs += [(("fidelity", lb), ("stock", lb)) for lb in labels]
    for a, b in pairs:
        da, db = at.loc[a[0], a[1]], at.loc[b[0], b[1]]
        diffs = (da - db.reindex(da.index)).dropna().to_numpy()
        mean, lo, hi = t_interval(diffs)
        rows.append(
            {
                "a": f"{a[0]} / {a[1]}",
                "b": f"{b[0]} / {b[1]}",
                "seeds": len(diffs),
                "mean_diff_points": round(100 * mean, 3),
                "ci_low_points": round(100 * lo, 3),
                "ci_high_points": round(100 * hi, 3),
                "a_better_seeds": int((diffs < 0).sum()),
                "b_better_seeds": int((diffs > 0).sum()),
            }
        )
    return pd.DataFrame(rows)


def figure(table: pd.DataFrame, path: Path, searchers: list[str], labels: list[str], budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(searchers), figsize=(5 * len(searchers), 4), sharey=True, squeeze=False)
    for ax, searcher in zip(axes[0], searchers, strict=False):
        for label in labels:
            d = table[(table["searcher"] == searcher) & (table["setting"] == label)]
            (line,) = ax.plot(d["epochs_spent"], 100 * d["mean"], marker="o", ms=3, label=label)
            ax.fill_between(d["epochs_spent"], 100 * d["q25"], 100 * d["q75"], color=line.get_color(), alpha=0.12)
        ax.set_title(f"searcher: {searcher}")
        ax.set_xlabel("epochs spent (all trials)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("regret, accuracy points (mean; band: quartiles)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"Regret of the incumbent vs epochs spent (budget {budget} epochs, {int(table['seeds'].max())} seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"-> {path}")


if __name__ == "__main__":
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    sys.exit(main())
