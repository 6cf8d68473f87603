"""The trial schedulers (ASHA or FIFO) with their settings, and the rungs ASHA judges at.

Imports Ray (the scheduler classes), never TensorFlow. The settings live on the space
(`SearchSpace.scheduler`, a Ray-free dataclass); run_search.py's flags override them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

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


class SmoothedASHA(ASHAScheduler):
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
    kind: str, settings: SchedulerSettings, max_epochs: int, *, metric: str | None = None, mode: str | None = None
) -> TrialScheduler:
    """FIFO (no early stopping) or ASHA at `settings`, judging at the epochs rung_epochs() lists.
    metric/mode may be left to tune.TuneConfig."""
    if kind == "fifo":
        return FIFOScheduler()
    if kind != "asha":
        raise ValueError(f"scheduler must be 'asha' or 'fifo', got {kind!r}")
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


def record(kind: str, settings: SchedulerSettings | None, max_epochs: int, metric: str, mode: str) -> dict[str, Any]:
    """What experiment.json stores as `scheduler_settings` (analysis.rungs reads it back). Recorded for
    FIFO too: the report then says what ASHA at the space's settings would have judged."""
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
