"""The trial schedulers (ASHA, FIFO, or population-based training) with their settings, and the rungs ASHA
judges at.

Imports Ray (the scheduler classes), never TensorFlow. The settings live on the space
(`SearchSpace.scheduler`, a Ray-free dataclass); run_search.py's flags override them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler

from analysis import rungs
from search_spaces.base import STOP_ON, SchedulerSettings, SearchSpace

TIME_ATTR = "epoch"  # the trainable's 1-based epoch count
EMA_WEIGHT = rungs.EMA_WEIGHT  # stop_on='ema': the one weight, shared with the rung diagnostics


def resolve_settings(
    space: SearchSpace,
    max_epochs: int,
    *,
    grace_period: int | None = None,
    reduction_factor: int | None = None,
    brackets: int | None = None,
    stop_on: str | None = None,
) -> SchedulerSettings:
    """The space's settings with the given ones (flags) replacing them; ValueError names what is wrong.

    A space default that a short budget cannot hold (grace 2 with --max-epochs 1) is cut to fit;
    a given value that does not fit is refused."""
    given = {
        k: v
        for k, v in dict(
            grace_period=grace_period, reduction_factor=reduction_factor, brackets=brackets, stop_on=stop_on
        ).items()
        if v is not None
    }
    settings = dataclasses.replace(space.scheduler, **given)  # type: ignore[arg-type]  # typed per flag
    if settings.grace_period > max_epochs:
        if "grace_period" in given:
            raise ValueError(
                f"grace_period {settings.grace_period} is more than the full budget of {max_epochs} "
                "epochs; lower it, or use FIFO"
            )
        settings = dataclasses.replace(settings, grace_period=max_epochs)
    fit = max(1, len(rung_epochs(dataclasses.replace(settings, brackets=1), max_epochs)))
    if settings.brackets > fit:
        if "brackets" in given:
            raise ValueError(
                f"brackets {settings.brackets}: with grace_period {settings.grace_period}, "
                f"reduction_factor {settings.reduction_factor} and {max_epochs} epochs only "
                f"{fit} bracket(s) have a rung below the budget; use fewer brackets"
            )
        settings = dataclasses.replace(settings, brackets=fit)
    return settings


def bracket_rungs(settings: SchedulerSettings, max_epochs: int) -> list[list[int]]:
    """Each bracket's rungs below max_epochs (analysis.rungs.bracket_rungs, Ray's arithmetic)."""
    return rungs.bracket_rungs(settings.grace_period, settings.reduction_factor, settings.brackets, max_epochs)


def rung_epochs(settings: SchedulerSettings, max_epochs: int) -> list[int]:
    """Every epoch at which some bracket judges, ascending."""
    return rungs.rung_epochs(settings.grace_period, settings.reduction_factor, settings.brackets, max_epochs)


class LiveTrialsFirst:
    """A FIFO choice of the next trial to start, made among the live trials.

    Ray's FIFOScheduler.choose_trial_to_run (ASHA's too) walks every trial of the experiment at every
    step of Tune's loop, twice when none is pending: profiled over trials 2,001-3,000 of a 3,000-trial
    run, 0.47 ms a step and 5.7 steps a trial, growing with the experiment (benchmarks/README.md, issue
    22). The same choice, the first PENDING trial in the order trials were added, else the first PAUSED,
    is made here among TuneController.get_live_trials() (a trial that is neither terminated nor failed),
    so its cost is the live trials', not the experiment's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._added: dict[str, int] = {}  # trial id -> the order on_trial_add saw it in

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]  # the scheduler mixed in
        self._added.setdefault(trial.trial_id, len(self._added))

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        live = tune_controller.get_live_trials()
        if any(t.trial_id not in self._added for t in live):
            return super().choose_trial_to_run(tune_controller)  # type: ignore[misc]  # not seen added
        for status in (Trial.PENDING, Trial.PAUSED):
            waiting = [t for t in live if t.status == status]
            if waiting:
                return min(waiting, key=lambda t: self._added[t.trial_id])
        return None


class FIFO(LiveTrialsFirst, FIFOScheduler):
    """Ray's FIFOScheduler, choosing among the live trials (LiveTrialsFirst)."""


class SmoothedASHA(LiveTrialsFirst, ASHAScheduler):
    """Ray's ASHA comparing a smoothed metric at its rungs: the best so far, or an exponential mean.

    Smoothing keeps per trial the metric of each epoch (a restored trial that replays an epoch
    replaces it), so the value is the same whatever was replayed.
    """

    def __init__(self, *args: Any, stop_on: str = "last", **kwargs: Any) -> None:
        if stop_on not in STOP_ON:
            raise ValueError(f"stop_on must be one of {', '.join(STOP_ON)}, got {stop_on!r}")
        super().__init__(*args, **kwargs)
        self._stop_on = stop_on
        self._history: dict[str, dict[int, float]] = {}  # trial id -> {epoch: metric}

    def _smoothed(self, trial: Any, result: dict) -> dict:
        if self._stop_on == "last" or self._metric not in result or self._time_attr not in result:
            return result
        value = result[self._metric]
        if value is None or not math.isfinite(value):
            return result
        history = self._history.setdefault(trial.trial_id, {})
        history[int(result[self._time_attr])] = float(value)
        values = [history[e] for e in sorted(history)]
        return {**result, self._metric: smooth(values, self._stop_on, self._mode or "max")}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return super().on_trial_result(tune_controller, trial, self._smoothed(trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self._smoothed(trial, result))
        self._history.pop(trial.trial_id, None)


def smooth(values: list[float], stop_on: str, mode: str = "max") -> float:
    """The value ASHA compares after the epochs `values` (oldest first)."""
    if stop_on == "last":
        return values[-1]
    if stop_on == "best":
        return max(values) if mode == "max" else min(values)
    ema = values[0]
    for v in values[1:]:
        ema = EMA_WEIGHT * v + (1 - EMA_WEIGHT) * ema
    return ema


def build_scheduler(
    kind: str,
    settings: SchedulerSettings,
    max_epochs: int,
    *,
    metric: str | None = None,
    mode: str | None = None,
    space: SearchSpace | None = None,
    perturbation_interval: int | None = None,
) -> TrialScheduler:
    """FIFO (no early stopping), ASHA at `settings`, judging at the epochs rung_epochs() lists, or
    population-based training of `space`'s perturbable knobs (pbt). metric/mode may be left to
    tune.TuneConfig."""
    if kind == "fifo":
        return FIFO()
    if kind == "pbt":
        if space is None:
            raise ValueError("scheduler 'pbt' needs the space whose perturbable knobs it changes")
        return population_based_training(space, perturbation_interval or default_interval(max_epochs))
    if kind != "asha":
        raise ValueError(f"scheduler must be 'asha', 'fifo' or 'pbt', got {kind!r}")
    return SmoothedASHA(
        time_attr=TIME_ATTR,
        metric=metric,
        mode=mode,
        max_t=max_epochs,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
        brackets=settings.brackets,
        stop_on=settings.stop_on,
    )


# Ray's PBT perturbs a continuous knob by one of these factors (its defaults); resample_probability 0 keeps
# every change a perturbation of the value in force, never a fresh draw: a knob a trial does not read stays
# at its 0 default (0 times a factor), so an Adam trial gains no momentum and no weight decay it never had.
PERTURBATION_FACTORS = (1.2, 0.8)


def default_interval(max_epochs: int) -> int:
    """Epochs between two perturbations of a trial: a quarter of the budget (at least one), so a trial is
    judged three times or so and each setting trains long enough to be judged."""
    return max(1, max_epochs // 4)


def population_based_training(space: SearchSpace, interval: int) -> PopulationBasedTraining:
    """Ray Tune's PBT over the space's perturbable knobs: every `interval` epochs a trial in the bottom
    quarter continues from the latest checkpoint of one in the top quarter (its own checkpoints, made every
    --checkpoint-every epochs), with that trial's knobs perturbed and kept within the space's ranges.

    Synchronous (Ray's `synch`): every trial waits at each perturbation step for the rest of the population,
    which pauses it there (from its checkpoint of that epoch). Asynchronous PBT compares a trial only with
    the trials running at that moment; with more trials than workers, or trials of uneven speed, a trial may
    finish before another reaches the same epoch and no two are ever compared: on two cores, two digits
    trials of four epochs ran through without one perturbation."""
    distributions = perturbable_distributions(space)  # sampled once: 64 draws of the space
    bounds = bounds_of(distributions)
    return PopulationBasedTraining(
        time_attr=TIME_ATTR,
        perturbation_interval=interval,
        synch=True,
        hyperparam_mutations={k: domain(d) for k, d in distributions.items()},
        resample_probability=0.0,
        perturbation_factors=PERTURBATION_FACTORS,
        custom_explore_fn=functools.partial(within, bounds=bounds),
    )


def perturbable_distributions(space: SearchSpace) -> dict[str, optuna.distributions.FloatDistribution]:
    """The Optuna distribution of each perturbable knob the space samples; ValueError when it declares none
    it samples."""
    found = space.distributions()
    chosen = {
        knob: found[knob]
        for knob in space.perturbable
        if isinstance(found.get(knob), optuna.distributions.FloatDistribution)
    }
    if not chosen:
        raise ValueError(f"space {space.name!r} declares no perturbable knob it samples (SearchSpace.perturbable)")
    return chosen  # type: ignore[return-value]  # narrowed by the isinstance above


def bounds_of(distributions: dict[str, optuna.distributions.FloatDistribution]) -> dict[str, tuple[float, float]]:
    return {knob: (float(d.low), float(d.high)) for knob, d in distributions.items()}


def perturbation_bounds(space: SearchSpace) -> dict[str, tuple[float, float]]:
    """(low, high) of each perturbable knob the space samples; ValueError when it declares none it samples."""
    return bounds_of(perturbable_distributions(space))


def domain(distribution: optuna.distributions.BaseDistribution) -> Any:
    """The Tune domain of an Optuna float distribution (PBT requires one per mutated knob)."""
    assert isinstance(distribution, optuna.distributions.FloatDistribution)
    if distribution.log:
        return tune.loguniform(distribution.low, distribution.high)
    return tune.uniform(distribution.low, distribution.high)


def within(config: dict[str, Any], bounds: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """A perturbed config with each knob kept in its range, except a 0 (a knob the trial does not read, or
    SGD without momentum), which perturbation keeps at 0. Module-level: Tune pickles the scheduler."""
    out = dict(config)
    for knob, (low, high) in bounds.items():
        value = out.get(knob)
        if isinstance(value, float) and value != 0.0:
            out[knob] = min(max(value, low), high)
    return out


def record(
    kind: str,
    settings: SchedulerSettings | None,
    max_epochs: int,
    metric: str,
    mode: str,
    *,
    space: SearchSpace | None = None,
    perturbation_interval: int | None = None,
) -> dict[str, Any]:
    """What experiment.json stores as `scheduler_settings` (analysis.rungs reads it back). Recorded for
    FIFO too: the report then says what ASHA at the space's settings would have judged. PBT records its
    interval and the ranges it keeps each perturbable knob in (and no rungs: it stops nothing)."""
    if kind == "pbt" and space is not None:
        return {
            "kind": kind,
            "perturbation_interval": perturbation_interval or default_interval(max_epochs),
            "perturbable": {k: list(b) for k, b in perturbation_bounds(space).items()},
            "time_attr": TIME_ATTR,
            "metric": metric,
            "mode": mode,
        }
    if settings is None:
        return {"kind": kind}
    return {
        "kind": kind,
        **settings.to_dict(),
        "max_t": max_epochs,
        "time_attr": TIME_ATTR,
        "metric": metric,
        "mode": mode,
        "rungs": rung_epochs(settings, max_epochs),
    }
