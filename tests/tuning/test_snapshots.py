"""The forced experiment snapshot every `--keep-checkpoints` checkpoints of a trial, within a share of the
driver's time (tuning.snapshots), and its place in a real Tune controller."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tuning import snapshots
from tuning.checkpoint_pruning import CheckpointPruner


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Syncer:
    """Tune's syncer, as the manager uses it: a copy launched unless one still runs."""

    def __init__(self) -> None:
        self.copies = 0
        self.busy = False

    def sync_up(self, local: str, remote: str) -> bool:
        if self.busy:
            return False
        self.copies += 1
        return True

    def wait(self) -> None:
        self.busy = False


@pytest.fixture
def manager():
    clock = Clock()
    storage = SimpleNamespace(experiment_driver_staging_path="/nowhere", experiment_fs_path="/nowhere", syncer=Syncer())
    # The timer off, as in the fault tests: only forced snapshots (and the first one) are taken.
    m = snapshots.BudgetedSnapshots(storage=storage, checkpoint_period=1e9, every=2, share=0.1, clock=clock)
    return m, clock, storage.syncer


def step(m, cost: float, clock: Clock) -> int:
    """One step of Tune's loop: maybe a snapshot, which takes `cost` seconds. Returns snapshots taken."""
    taken = []

    def save() -> None:
        clock.now += cost
        taken.append(1)

    m.sync_up_experiment_state(save)
    return len(taken)


def test_a_trials_second_checkpoint_forces_a_snapshot_as_num_to_keep_did(manager):
    m, clock, syncer = manager
    assert step(m, 0.01, clock) == 1  # the first step's snapshot
    clock.now += 5
    trial = object()
    m.on_trial_checkpoint(trial)
    assert step(m, 0.01, clock) == 0  # one checkpoint since: nothing forced
    m.on_trial_checkpoint(trial)
    assert step(m, 0.01, clock) == 1 and syncer.copies == 2 and m.forced == 1
    assert step(m, 0.01, clock) == 0  # the count starts again


def test_over_the_budget_the_forced_snapshot_waits_for_it_then_is_taken(manager):
    m, clock, syncer = manager
    assert step(m, 1.0, clock) == 1  # a costly first snapshot: 1 s spent
    clock.now += 4  # 5 s since the start: 10 % is 0.5 s < 1 s spent
    trial = object()
    m.on_trial_checkpoint(trial)
    m.on_trial_checkpoint(trial)
    assert step(m, 1.0, clock) == 0 and m.deferred == 1 and m.owed
    clock.now += 4  # 9 s: still over
    assert step(m, 1.0, clock) == 0 and m.deferred == 1  # one snapshot waiting, counted once
    clock.now += 1  # 10 s: 1 s spent is 10 %
    assert step(m, 1.0, clock) == 1 and m.forced == 1 and not m.owed
    assert m.spent == pytest.approx(2.0)


def test_a_forced_snapshot_whose_copy_cannot_start_is_asked_again(manager):
    m, clock, syncer = manager
    step(m, 0.01, clock)
    clock.now += 5
    syncer.busy = True  # Tune's force waits for the running copy first, so this only happens with a slow wait
    syncer.wait = lambda: None  # the copy outlives the wait
    trial = object()
    m.on_trial_checkpoint(trial)
    m.on_trial_checkpoint(trial)
    step(m, 0.01, clock)
    assert m.owed and m._should_force_sync_up
    syncer.busy = False
    assert step(m, 0.01, clock) == 1 and not m.owed and m.forced == 1


def test_the_controller_takes_budgeted_snapshots_with_a_pruner_and_tunes_own_without(tmp_path):
    """A real TuneController (Ray 2.60's private names: a Ray that moved them fails here)."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import Searcher, SearchGenerator

    snapshots.install()
    snapshots.install()  # idempotent
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="x")

    def controller(callbacks: list) -> TuneController:
        return TuneController(storage=storage, callbacks=callbacks, search_alg=SearchGenerator(Searcher()))

    budgeted = controller([CheckpointPruner(3)])._checkpoint_manager
    assert isinstance(budgeted, snapshots.BudgetedSnapshots) and budgeted._sync_every_n_trial_checkpoints == 3
    own = controller([])._checkpoint_manager
    assert type(own) is _ExperimentCheckpointManager and own._sync_every_n_trial_checkpoints is None
