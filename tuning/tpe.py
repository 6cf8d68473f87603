"""Optuna's TPE with a bounded cost per ask: above HISTORY finished trials it models a sample of them.

TPE splits the finished trials into the best few ("below": at most 25, Optuna's default gamma) and the rest
("above"), fits a Parzen estimator to each and samples where their ratio is best. Optuna's fit walks every
finished trial in Python at every ask (ranking them, reading each one's parameters), so an ask costs
O(finished trials): profiled at 3,000 trivial trials (benchmarks/bookkeeping.py --profile), TPE was 38 % of
the driver's time, 42 ms per ask on average and growing, and over 10,000 trials it made the driver's time
per trial grow 5x from the first 1,000 to the last (benchmarks/README.md, issue 22).

So above HISTORY finished trials, TPE sees HISTORY of them: the best BEST completed ones (all of "below"
whenever at least BEST trials have completed, so its estimator is the one full TPE fits) and a seeded
random sample of the others (an unbiased sample of "above": its estimator is the same density estimated
from fewer points, a little smoother). Up to HISTORY finished trials, and for several objectives (whose
"below" is a Pareto ranking), it is Optuna's TPE exactly. The sample is drawn from (seed, trial number),
so a seeded search asks the same configurations again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

HISTORY = 1000  # finished trials TPE models at most
BEST = 25  # Optuna's default gamma caps "below" at 25 trials (optuna.samplers._tpe.sampler.default_gamma)


class BoundedTPESampler(optuna.samplers.TPESampler):
    """optuna.samplers.TPESampler that models at most `history` finished trials (the module docstring)."""

    def __init__(self, *, seed: int | None = None, history: int = HISTORY, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        if history <= BEST:
            raise ValueError(f"history must be > {BEST} trials, got {history}")
        self._history = history
        self._history_seed = seed

    def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        # Optuna's TPE reads the finished trials through study._get_trials (optuna 5.x, pinned < 6).
        view: Any = _HistoryView(study, self, trial.number)  # duck-types the Study TPE reads
        return super()._sample(view, trial, search_space)

    def history_of(self, study: Any, trials: list, number: int) -> list:
        """The trials TPE models for the ask of trial `number`: all of `trials` up to the bound; else TPE's
        "below" (the best BEST completed; Optuna's own split while fewer have completed, when pruned trials
        fill it) and a seeded sample of the rest, in their order."""
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if len(finished) <= self._history or len(study.directions) != 1:
            return trials
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        complete = [t for t in finished if t.state == TrialState.COMPLETE and t.values is not None]
        best = sorted(complete, key=lambda t: sign * t.values[0])[:BEST]
        if len(best) < BEST:
            from optuna.samplers._tpe.sampler import _split_trials

            best, _ = _split_trials(study, finished, BEST)
        chosen = {t.number for t in best}
        rest = [t for t in trials if t.number not in chosen]
        rng = np.random.default_rng([self._history_seed or 0, number])
        picked = rng.choice(len(rest), size=self._history - len(chosen), replace=False)
        chosen.update(rest[i].number for i in picked)
        return [t for t in trials if t.number in chosen]


class _HistoryView:
    """The study as BoundedTPESampler's TPE sees it: everything is the study's, but its finished trials."""

    def __init__(self, study: Any, sampler: BoundedTPESampler, number: int) -> None:
        self._study = study
        self._sampler = sampler
        self._number = number

    def _get_trials(self, *args: Any, **kwargs: Any) -> list:
        trials = self._study._get_trials(*args, **kwargs)
        return self._sampler.history_of(self._study, trials, self._number)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
