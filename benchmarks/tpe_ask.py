#!/usr/bin/env python
"""What one TPE ask costs as a study grows (tuning/tpe.py): the driver's bounded TPE beside Optuna's own
TPESampler, on in-memory studies of N finished trials, side by side in one run.

    .venv/bin/python benchmarks/tpe_ask.py            # 1,000 / 3,000 / 10,000 finished trials
    .venv/bin/python benchmarks/tpe_ask.py --quick    # 100 / 300 (a smoke run)

Each study holds N finished trials of the batchnorm space shaped like an ASHA search's: two in three PRUNED
after one reported epoch, the others COMPLETE after three (TPE's fit reads the intermediate values of
pruned trials). Then `--asks` trials are asked, defined by the space and told a value, one at a time, as
the driver's searcher does; the figure is the mean time of an ask and its tell. The bounded TPE models at
most 1,000 finished trials, so its cost should stay about flat past 1,000 (target: at 10,000 trials at most
1.5x its cost at 1,000); Optuna's grows with the study.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "tpe_ask"
TARGET_FLAT = 1.5  # bounded ask at the largest N / at 1,000 (or the smallest N)


def finished_study(sampler: optuna.samplers.BaseSampler, n: int, seed: int) -> optuna.Study:
    """An in-memory study with `n` finished trials of the batchnorm space, pruned or completed as ASHA ends them."""
    from search_spaces.batchnorm import define

    rng = np.random.default_rng(seed)
    scratch = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for i in range(n):
        trial = scratch.ask()
        define(trial)
        value = float(rng.uniform(0.2, 0.6))
        epochs = 3 if i % 3 == 0 else 1
        trials.append(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=trial.distributions,
                value=value if epochs == 3 else None,
                state=optuna.trial.TrialState.COMPLETE if epochs == 3 else optuna.trial.TrialState.PRUNED,
                intermediate_values={e: value * e / 3 for e in range(1, epochs + 1)},
            )
        )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.add_trials(trials)
    return study


def ask_ms(study: optuna.Study, asks: int, seed: int) -> float:
    """Mean milliseconds of an ask, the space's define-by-run and a tell, after two untimed ones."""
    from search_spaces.batchnorm import define

    rng = np.random.default_rng(seed)

    def one() -> None:
        trial = study.ask()
        define(trial)
        study.tell(trial, float(rng.uniform(0.2, 0.6)))

    for _ in range(2):
        one()
    start = time.perf_counter()
    for _ in range(asks):
        one()
    return 1000 * (time.perf_counter() - start) / asks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 and 300 trials, 10 asks (a smoke run)")
    p.add_argument("--trials", type=int, nargs="+", default=None, help="finished trials (default 1000 3000 10000)")
    p.add_argument("--asks", type=int, default=None, help="timed asks per study (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from tuning.tpe import BoundedTPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = args.trials or ([100, 300] if args.quick else [1000, 3000, 10000])
    asks = args.asks or (10 if args.quick else 50)
    samplers = {"bounded": BoundedTPESampler, "optuna": optuna.samplers.TPESampler}
    rows = []
    for n in sizes:
        for name, make in samplers.items():
            ms = ask_ms(finished_study(make(seed=args.seed), n, args.seed), asks, args.seed)
            rows.append({"trials": n, "sampler": name, "asks": asks, "ms_per_ask": round(ms, 2)})
            print(f"{n} trials, {name}: {ms:.2f} ms an ask", flush=True)
    frame = pd.DataFrame(rows)
    bounded = frame[frame["sampler"] == "bounded"].set_index("trials")["ms_per_ask"]
    base = bounded.get(1000, bounded.iloc[0])
    frame["bounded_over_first"] = round(bounded.iloc[-1] / base, 2)
    frame["target_flat"] = TARGET_FLAT
    frame["met"] = bool(bounded.iloc[-1] / base <= TARGET_FLAT)
    for key, value in _common.machine().items():
        frame[key] = value
    _common.emit(NAME, frame, Path(args.out) if args.out else None, "one TPE ask: bounded vs Optuna's, by study size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
