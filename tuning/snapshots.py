"""Tune's experiment snapshot after every `--keep-checkpoints` checkpoints of a trial, within a time budget.

What a resumed experiment finds is Tune's last experiment-state snapshot on the storage (every trial's
state, the searcher's, the driver's result.json files). Tune takes one on a timer (TUNE_GLOBAL_CHECKPOINT_S,
by default at least every 10 s and at most ~5 % of the driver's time), when the run ends, and, with
`CheckpointConfig(num_to_keep=N)`, *forced* whenever a trial has made N checkpoints since the last one. A
snapshot is O(trials) (the state of every trial, and a copy of the driver's folder to the storage), so the
forced ones, about one per trial, made the driver's time per trial grow with the trials (issue 11: 100 to
490 ms over 1,000 trivial trials). num_to_keep is not given to Tune any more (tuning.checkpoint_pruning
deletes old checkpoints instead), which also ended the forced snapshots: a driver killed between two timed
snapshots lost every trial's progress since the last (the fault tests, which turn the timer off so that
what the storage holds follows from the trials' progress alone, found nothing to resume).

So the forced snapshot is kept, by the same rule as Tune's (a trial has made `every` checkpoints since the
last snapshot), but only while the snapshots so far have taken at most SHARE of the driver's time since the
run (or the resumed run) started; over it, the snapshot waits, and is taken at the first step the budget
allows again (or by the timer). A small experiment, whose snapshots take milliseconds, snapshots exactly
as Tune's num_to_keep did; a large one spends at most SHARE of its time on them, so the driver's time per
trial stays flat however many trials there are. Deleting checkpoints stays safe however the snapshots are
timed: the pruner deletes one only after two later snapshots and Tune's bound on a copy.

Tune has no setting for this: the forced snapshot is its `_ExperimentCheckpointManager`'s, which the
TuneController builds itself. `install()` makes the controller build this subclass instead when one of its
callbacks is a CheckpointPruner (the driver's Tuners with `--keep-checkpoints` >= 1), and Tune's own one
otherwise. Both are Ray 2.60's private names (pyproject pins 2.60.x); tests/tuning/test_snapshots.py builds a
real controller, so a Ray that moved them fails there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

logger = logging.getLogger(__name__)

# The share of the driver's time that forced snapshots may bring the snapshots' total to: twice the 5 % Tune
# aims its timer at, so that the timer's own snapshots leave room for forced ones in small runs, whose forced
# snapshots then all happen (what the fault tests rely on), while a large run stays within a fixed share.
SHARE = 0.10


class BudgetedSnapshots(_ExperimentCheckpointManager):
    """Tune's experiment checkpoint manager, forcing a snapshot when a trial has made `every` checkpoints
    since the last one, as num_to_keep does, while the snapshots have taken at most `share` of the time."""

    def __init__(
        self,
        *,
        storage: Any,
        checkpoint_period: int | float | str,
        every: int,
        share: float = SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(storage=storage, checkpoint_period=checkpoint_period, sync_every_n_trial_checkpoints=every)
        self.share = share
        self.clock = clock
        self.started = clock()
        self.spent = 0.0  # seconds spent taking snapshots since `started`
        self.forced = 0  # snapshots the trials' checkpoints forced (counts, for the bookkeeping benchmark)
        self.deferred = 0  # forced snapshots that waited for the budget
        self.owed = False  # a forced snapshot is waiting for the budget

    def within_budget(self) -> bool:
        return self.spent <= self.share * (self.clock() - self.started)

    def sync_up_experiment_state(self, save_fn: Callable[[], None], force: bool = False, wait: bool = False) -> None:
        asked = self._should_force_sync_up and not force
        waiting = asked and not self.within_budget()
        if waiting:
            self._should_force_sync_up = False  # only the timer may take one now
            self.deferred += not self.owed
        saved_before, synced_before = self._last_save_time, self._last_sync_time
        start = self.clock()
        try:
            super().sync_up_experiment_state(save_fn, force=force, wait=wait)
        finally:
            if self._last_save_time != saved_before:
                self.spent += self.clock() - start
            synced = self._last_sync_time != synced_before
            self.forced += asked and not waiting and synced
            # Still owed if no copy started (Tune skips it while the previous one runs): asked at the next step.
            self.owed = asked and not synced
            if self.owed:
                self._should_force_sync_up = True


def install() -> None:
    """Make Tune's controller take its forced snapshots from BudgetedSnapshots when one of its callbacks is a
    CheckpointPruner (its `keep` is the number of checkpoints between two), and copy every snapshot to a
    local storage with its state files renamed into place (tuning.atomic_storage); idempotent."""
    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController._create_checkpoint_manager, "budgeted", False):
        return
    tunes_own = TuneController._create_checkpoint_manager

    def create_checkpoint_manager(controller: Any) -> Any:
        from tuning.atomic_storage import use_atomic_state_sync
        from tuning.checkpoint_pruning import CheckpointPruner

        use_atomic_state_sync(controller._storage)  # the storage's syncer copies the snapshots the manager takes

        pruners = [cb for cb in controller._callbacks._callbacks if isinstance(cb, CheckpointPruner)]
        if not pruners:
            return tunes_own(controller)
        return BudgetedSnapshots(
            storage=controller._storage, checkpoint_period=controller._checkpoint_period, every=pruners[0].keep
        )

    create_checkpoint_manager.budgeted = True  # type: ignore[attr-defined]
    TuneController._create_checkpoint_manager = create_checkpoint_manager  # type: ignore[method-assign]
