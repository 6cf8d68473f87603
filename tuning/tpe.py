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
from fewer points, a little smoother), with every running trial when TPE asks for them (constant_liar, the
default since Optuna 5). Up to HISTORY finished trials, and for several objectives (whose "below" is a
Pareto ranking), it is Optuna's TPE exactly. The sample is drawn from (seed, trial number), so a seeded
search asks the same configurations again.

Choosing them must not walk the study either: ranking and filtering every finished trial at every ask made
an ask and a tell cost 13.9 ms at 10,000 finished trials against 5.8 ms at 1,000 (benchmarks/tpe_ask.py,
benchmarks/README.md, issue 22). The sampler keeps the finished trials' numbers and the best BEST, brought
up to date at each ask from the trials added or still open since the last one (a finished trial never
changes again).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

HISTORY = 1000  # finished trials TPE models at most
BEST = 25  # Optuna's default gamma caps "below" at 25 trials (optuna.samplers._tpe.sampler.default_gamma)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials TPE models (without constant_liar)
OPEN = (TrialState.RUNNING, TrialState.WAITING)  # may still finish; FAIL never does


class BoundedTPESampler(optuna.samplers.TPESampler):
    """optuna.samplers.TPESampler that models at most `history` finished trials (the module docstring)."""

    def __init__(self, *, seed: int | None = None, history: int = HISTORY, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        if history <= max(BEST, self._n_startup_trials):  # TPE counts its start-up trials in the history too
            raise ValueError(f"history must be > {BEST} trials and > n_startup_trials, got {history}")
        self._history = history
        self._history_seed = seed
        self._finished: tuple[tuple[int, int], FinishedTrials] | None = None  # (study key, its finished trials)

    def __getstate__(self) -> dict[str, Any]:
        # The finished trials are re-read from the study after a restore, never trusted from a pickle.
        return {**self.__dict__, "_finished": None}

    # Optuna's TPE reads the finished trials through study._get_trials (optuna 5.x, pinned < 6): to count them
    # against n_startup_trials (in the first two methods) and to fit (in _sample), each a filter of every trial.

    def _sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        if len(study.directions) != 1:
            return super()._sample_relative(study, trial, search_space)
        # Optuna's own three steps, counting from the record (every ask of a define-by-run space comes here).
        if search_space == {}:
            return {}
        trials = study._get_trials(deepcopy=False, use_cache=True)
        if len(self._finished_of(study, trials).numbers) < self._n_startup_trials:
            return {}
        return self._sample(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        # A knob outside the relative space (a conditional one): Optuna's count and warning read the history.
        return super().sample_independent(self._view(study, trial), trial, param_name, param_distribution)

    def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return super()._sample(self._view(study, trial), trial, search_space)

    def _view(self, study: Any, trial: Any) -> Any:
        return study if isinstance(study, _HistoryView) else _HistoryView(study, self, trial.number)

    def history_of(
        self, study: Any, trials: list[FrozenTrial], number: int, states: Collection[TrialState] = FINISHED
    ) -> list[FrozenTrial]:
        """The trials TPE models for the ask of trial `number`, in number order, from `trials`, every trial of
        `study` in number order. Of the finished ones: all up to the bound; else TPE's "below" (the best BEST
        completed; Optuna's own split while fewer have completed, when pruned trials fill it) and a seeded
        sample of the rest. Those of the other `states` asked for (RUNNING, under constant_liar, the default
        since Optuna 5), all. Costs the trials added or still open since the last ask, not the study's size.
        Several objectives (whose "below" is a Pareto ranking) are left to Optuna: every trial asked for."""
        if len(study.directions) != 1:
            return [t for t in trials if t.state in states]
        finished = self._finished_of(study, trials)
        others = [i for i in finished.open if trials[i].state in states]
        if len(finished.numbers) <= self._history:
            return [trials[i] for i in sorted(finished.numbers + others)]
        if len(finished.best) == BEST:
            chosen = [i for _, i in finished.best]
        else:
            from optuna.samplers._tpe.sampler import _split_trials

            below, _ = _split_trials(study, [trials[i] for i in finished.numbers], BEST)
            chosen = [t.number for t in below]
        # A seeded sample of the others, drawn as positions among them: the k-th chosen position (sorted)
        # shifts every later one by one more, so no list of the others is built.
        taken = np.sort([bisect.bisect_left(finished.numbers, i) for i in chosen])
        rng = np.random.default_rng([self._history_seed or 0, number])
        picked = rng.choice(len(finished.numbers) - len(taken), size=self._history - len(taken), replace=False)
        positions = picked + np.searchsorted(taken - np.arange(len(taken)), picked, side="right")
        sample = [finished.numbers[p] for p in positions.tolist()]
        return [trials[i] for i in sorted([*chosen, *sample, *others])]

    def _finished_of(self, study: Any, trials: list[FrozenTrial]) -> FinishedTrials:
        key = (id(study._storage), study._study_id)
        if self._finished is None or self._finished[0] != key:
            sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
            self._finished = (key, FinishedTrials(sign))
        return self._finished[1].update(trials)


class FinishedTrials:
    """The finished (COMPLETE or PRUNED) trials of one study, brought up to date from its trials in number
    order by looking only at those added since the last update and those still open then: a finished trial
    never changes again. Their numbers in order and, given the sign of the objective (1 to minimise, -1 to
    maximise), the best BEST completed as (sign * value, number), so ties go to the older trial as in a
    stable sort."""

    def __init__(self, sign: int | None = None) -> None:
        self.sign = sign
        self.scanned = 0  # trials[:scanned] have been looked at
        self.open: list[int] = []  # ... of which these had not finished yet (RUNNING or WAITING)
        self.numbers: list[int] = []
        self.best: list[tuple[float, int]] = []

    def update(self, trials: list[FrozenTrial]) -> FinishedTrials:
        if trials and (trials[0].number != 0 or trials[-1].number != len(trials) - 1):
            raise ValueError("FinishedTrials needs every trial of the study, in number order")
        if self.scanned > len(trials):  # another study's trials: start again
            self.scanned, self.open, self.numbers, self.best = 0, [], [], []
        looked, self.open = self.open + list(range(self.scanned, len(trials))), []
        self.scanned = len(trials)
        for i in looked:
            trial = trials[i]
            if trial.state in OPEN:
                self.open.append(i)
            elif trial.state in FINISHED:
                bisect.insort(self.numbers, i)
                if self.sign is not None and trial.state == TrialState.COMPLETE and trial.values is not None:
                    self._rank((self.sign * trial.values[0], i))
        return self

    def _rank(self, entry: tuple[float, int]) -> None:
        if len(self.best) < BEST or entry < self.best[-1]:
            bisect.insort(self.best, entry)
            del self.best[BEST:]


class _HistoryView:
    """The study as BoundedTPESampler's TPE sees it: everything is the study's, but its finished trials."""

    def __init__(self, study: Any, sampler: BoundedTPESampler, number: int) -> None:
        self._study = study
        self._sampler = sampler
        self._number = number

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list:
        if deepcopy or states is None or not set(FINISHED) <= set(states) <= set(FINISHED + OPEN):
            return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        trials = self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
        return self._sampler.history_of(self._study, trials, self._number, states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
