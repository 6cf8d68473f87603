"""ASHA's settings: the rungs Ray judges at, flags over space defaults, and the smoothed metric."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from search_spaces import SPACES
from search_spaces.base import SchedulerSettings
from tuning.schedulers import (
    FIFO,
    SmoothedASHA,
    bracket_rungs,
    build_scheduler,
    record,
    resolve_settings,
    smooth,
)


@pytest.mark.parametrize(
    "grace,rf,brackets,max_t",
    [(1, 3, 1, 27), (2, 3, 3, 27), (3, 3, 1, 30), (1, 3, 3, 30), (1, 2, 1, 20), (2, 3, 1, 15), (1, 4, 2, 100)],
)
def test_rungs_are_the_ones_rays_brackets_judge_at(grace, rf, brackets, max_t):
    ray_rungs = [
        [int(m) for m, _ in reversed(_Bracket(grace, max_t, rf, s)._rungs) if m < max_t] for s in range(brackets)
    ]
    assert bracket_rungs(SchedulerSettings(grace, rf, brackets), max_t) == ray_rungs


def test_flags_override_the_space_and_bad_values_are_refused():
    space = SPACES["basenet"]
    assert resolve_settings(space, 30) == space.scheduler
    assert resolve_settings(space, 30, grace_period=3, brackets=3, stop_on="best") == SchedulerSettings(
        3, space.scheduler.reduction_factor, 3, "best"
    )
    with pytest.raises(ValueError, match="grace_period 40 is more than the full budget"):
        resolve_settings(space, 30, grace_period=40)
    with pytest.raises(ValueError, match="brackets 3"):
        resolve_settings(space, 4, grace_period=2, brackets=3)  # one rung (2) below 4 epochs
    with pytest.raises(ValueError, match="reduction_factor must be >= 2"):
        resolve_settings(space, 30, reduction_factor=1)
    # A space default a short budget cannot hold is cut to fit (--max-epochs 1 still runs).
    short = resolve_settings(space, 1)
    assert short.grace_period == 1 and short.brackets == 1


def test_build_scheduler_and_record():
    settings = SchedulerSettings(2, 3, 3, "ema")
    asha = build_scheduler("asha", settings, 27, metric="val_accuracy", mode="max")
    assert isinstance(asha, SmoothedASHA) and asha._stop_on == "ema"
    assert [sorted(int(m) for m, _ in b._rungs) for b in asha._brackets] == [[2, 6, 18], [6, 18], [18]]
    assert type(build_scheduler("fifo", settings, 27)) is FIFO
    rec = record("asha", settings, 27, "val_accuracy", "max")
    assert rec["rungs"] == [2, 6, 18] and rec["grace_period"] == 2 and rec["max_t"] == 27


def test_smooth():
    assert smooth([0.2, 0.6, 0.4], "last") == 0.4
    assert smooth([0.2, 0.6, 0.4], "best") == 0.6
    assert smooth([0.2, 0.6, 0.4], "ema") == pytest.approx(0.5 * 0.4 + 0.5 * (0.5 * 0.6 + 0.5 * 0.2))


@pytest.mark.parametrize("stop_on,expected", [("last", TrialScheduler.STOP), ("best", TrialScheduler.CONTINUE)])
def test_a_one_epoch_dip_at_the_rung_stops_a_trial_only_on_the_last_value(stop_on, expected):
    asha = SmoothedASHA(
        time_attr="epoch",
        metric="val_accuracy",
        mode="max",
        max_t=9,
        grace_period=3,
        reduction_factor=3,
        stop_on=stop_on,
    )
    a, b, c, d = (SimpleNamespace(trial_id=t) for t in "abcd")
    for t in (a, b, c, d):
        asha.on_trial_add(None, t)
    for t, curve in ((a, [0.3, 0.4, 0.5]), (b, [0.3, 0.4, 0.45]), (c, [0.3, 0.4, 0.42])):
        for e, v in enumerate(curve, 1):
            asha.on_trial_result(None, t, {"epoch": e, "val_accuracy": v})
    decisions = [
        asha.on_trial_result(None, d, {"epoch": e, "val_accuracy": v}) for e, v in enumerate([0.4, 0.6, 0.1], 1)
    ]  # leads, then dips at the rung (epoch 3)
    assert decisions[-1] == expected


def test_pbt_mutates_the_spaces_perturbable_knobs_within_its_ranges():
    from ray.tune.schedulers import PopulationBasedTraining

    from search_spaces import SPACES
    from tuning.schedulers import build_scheduler, perturbation_bounds, within

    space = SPACES["basenet"]
    assert perturbation_bounds(space) == {
        "learning_rate": (1e-3, 0.3),
        "momentum": (0.8, 0.95),
        "weight_decay": (1e-5, 1e-2),
    }
    scheduler = build_scheduler("pbt", space.scheduler, 8, space=space)
    assert isinstance(scheduler, PopulationBasedTraining) and scheduler._perturbation_interval == 2
    bounds = perturbation_bounds(space)
    # Kept in range; a 0 (Adam's unread momentum, no weight decay) stays 0.
    assert within({"learning_rate": 0.36, "momentum": 0.0, "weight_decay": 0.0, "model": "basenet"}, bounds) == {
        "learning_rate": 0.3,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "model": "basenet",
    }
    assert within({"learning_rate": 0.0008, "momentum": 0.76}, bounds) == {"learning_rate": 1e-3, "momentum": 0.8}


class _Trial:
    """A trial as the choice reads it: its id and status, hashed by identity as Ray's Trial is."""

    def __init__(self, trial_id: str, status: str) -> None:
        self.trial_id, self.status = trial_id, status


class _Controller:
    """What a scheduler reads of Tune's controller to choose a trial: every trial in the order added, and the
    live ones (neither terminated nor failed), kept as TuneController keeps them."""

    def __init__(self) -> None:
        self.trials: list = []
        self.live: set = set()

    def get_trials(self) -> list:
        return self.trials

    def get_live_trials(self) -> set:
        return self.live

    def add(self, scheduler: TrialScheduler, trial: _Trial) -> None:
        self.trials.append(trial)
        self.live.add(trial)
        scheduler.on_trial_add(self, trial)

    def set_status(self, trial: _Trial, status: str) -> None:
        trial.status = status
        if status in (Trial.TERMINATED, Trial.ERROR):
            self.live.discard(trial)


@pytest.mark.parametrize("make", [FIFO, lambda: SmoothedASHA(time_attr="epoch", metric="m", mode="max", max_t=9)])
def test_the_trial_chosen_among_live_trials_is_the_one_rays_fifo_walk_chooses(make):
    scheduler, controller, rng = make(), _Controller(), random.Random(0)
    statuses = [Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR]
    chosen = []
    for step in range(400):
        if step % 3 == 0:
            controller.add(scheduler, _Trial(trial_id=f"t{step:04d}", status=Trial.PENDING))
        live = sorted(controller.live, key=lambda t: t.trial_id)
        if live:
            controller.set_status(rng.choice(live), rng.choice(statuses))
        expected = FIFOScheduler.choose_trial_to_run(scheduler, controller)  # Ray's walk over every trial
        got = scheduler.choose_trial_to_run(controller)
        assert got is expected
        chosen.append(got)
    assert {Trial.PENDING, Trial.PAUSED} <= {t.status for t in chosen if t is not None}  # both branches taken
    assert None in chosen


def test_a_live_trial_the_scheduler_never_saw_added_falls_back_to_rays_walk():
    scheduler, controller = FIFO(), _Controller()
    seen, unseen = (_Trial(trial_id=i, status=Trial.PAUSED) for i in ("a", "b"))
    controller.trials, controller.live = [unseen, seen], {unseen, seen}  # restored, not added through on_trial_add
    scheduler.on_trial_add(controller, seen)
    assert scheduler.choose_trial_to_run(controller) is unseen  # the first PAUSED in the experiment's order
