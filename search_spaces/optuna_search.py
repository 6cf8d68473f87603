"""The driver's searchers: Optuna that learns from the right fidelity, and fixed configs for grids and repeats.

Ray Tune's stock OptunaSearch reports intermediate values at `training_iteration`
and tells Optuna that a trial ASHA stopped after one epoch is COMPLETE, so TPE
ranks one-epoch and full-budget scores as equals. `FidelityOptunaSearch` reports
each epoch's metric at step = epoch and tells Optuna a trial that ended before the
full budget (ASHA or patience) was PRUNED, so Optuna's value for it is its last
intermediate value at its own step. Imports Ray and Optuna, never TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search_spaces.base import SearchSpace
from trainables.config import TrialConfig

EPOCH = "epoch"  # the trainable's 1-based epoch count, ASHA's time unit


def define_with_fixed(trial: optuna.Trial, space: SearchSpace, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The space's define-by-run plus the run's fixed knobs (dataset, seed, budget).

    Module-level (not in run_search.py, which runs as __main__) so the searcher state Tune
    pickles for --resume can be unpickled by any process.
    """
    return {**(space.define(trial) or {}), **fixed}


class FidelityOptunaSearch(OptunaSearch):
    """OptunaSearch with intermediate values at step = epoch and early-stopped trials PRUNED."""

    def __init__(self, *args: Any, max_epochs: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._reported: dict[str, set[int]] = {}  # trial id -> epochs already told to Optuna

    @property
    def study(self) -> optuna.Study | None:
        """The Optuna study: every trial with its state, params and intermediate values."""
        return self._ot_study

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value, step = result.get(self.metric), result.get(EPOCH)
        if result.get("error") or value is None or step is None or not math.isfinite(value):
            return  # a diverged epoch: the trial ends as FAIL, not as a score
        # A trial restored from its checkpoint may replay an epoch Optuna already has.
        reported = self._reported.setdefault(trial_id, set())
        if int(step) in reported:
            return
        self._ot_trials[trial_id].report(float(value), int(step))
        reported.add(int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        study = self._ot_study
        assert study is not None  # OptunaSearch creates it before it suggests any trial
        result = result or {}
        value, epochs = result.get(self.metric), result.get(EPOCH)
        if error or result.get("error") or (value is not None and not math.isfinite(value)):
            study.tell(ot_trial, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        # Tune hands a result the scheduler answered STOP (ASHA's rung, or max_t) only to this
        # method, never to on_trial_result: report it here, so the last epoch is not lost.
        if value is not None and epochs is not None:
            self.on_trial_result(trial_id, result)
        if value is not None and epochs is not None and (self._max_epochs is None or int(epochs) >= self._max_epochs):
            study.tell(ot_trial, float(value), state=TrialState.COMPLETE)
        else:
            # Ended before the full budget without error (ASHA, patience, or no result at all):
            # Optuna records its last intermediate value at its last step.
            study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def build_optuna_search(
    space: SearchSpace, fixed: Mapping[str, Any], *, metric: str, mode: str, seed: int, random: bool, max_epochs: int
) -> FidelityOptunaSearch:
    import functools

    sampler = optuna.samplers.RandomSampler(seed=seed) if random else optuna.samplers.TPESampler(seed=seed)
    return FidelityOptunaSearch(
        space=functools.partial(define_with_fixed, space=space, fixed=dict(fixed)),
        metric=metric,
        mode=mode,
        sampler=sampler,
        max_epochs=max_epochs,
    )


def full_configs(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each config completed to every TrialConfig field (validated; unknown keys fail loudly)."""
    return [TrialConfig.from_params(dict(c)).to_dict() for c in configs]


def fixed_configs_search(configs: Sequence[Mapping[str, Any]]) -> tuple[BasicVariantGenerator, dict[str, Any]]:
    """(searcher, param_space) that run exactly `configs`, one trial each, in order.

    Tune's own way to run given configs: BasicVariantGenerator's points_to_evaluate. Tune
    wants every key of a point declared in param_space, so each knob is declared as a choice
    among the values the points use; with num_samples = len(configs) nothing is sampled from it.
    """
    points = full_configs(configs)
    param_space = {name: tune.choice(sorted({p[name] for p in points}, key=repr)) for name in points[0]}
    return BasicVariantGenerator(points_to_evaluate=points), param_space


def grid_configs(
    space: SearchSpace, fixed: Mapping[str, Any], seed: int, repeats: int, where: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every cell of the space's grid (those matching `where`), `repeats` times with seeds seed, seed+1, ...

    Repeat-major: every cell once before any cell twice, so a search cut short still covers the grid.
    """
    cells = space.cells(where)
    return [{**cell, **fixed, "seed": seed + r} for r in range(max(1, repeats)) for cell in cells]
