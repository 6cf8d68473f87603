"""The checkpoint pruner: each trial keeps its newest `keep` checkpoints on the storage, and an older one
is deleted only once no experiment snapshot that could be the storage's latest names it."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest

from tuning.checkpoint_pruning import SLOW_COPY_ENV, CheckpointPruner


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_checkpoint(trial_dir: Path, index: int) -> SimpleNamespace:
    """A checkpoint as Tune hands it to on_checkpoint: its folder (on the storage) and the filesystem."""
    folder = trial_dir / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(f'{{"epoch": {index + 1}}}')
    return SimpleNamespace(filesystem=pafs.LocalFileSystem(), path=folder.as_posix())


def on_disk(trial_dir: Path) -> list[str]:
    return sorted(p.name for p in trial_dir.glob("checkpoint_*"))


@pytest.fixture
def pruner(monkeypatch):
    monkeypatch.setenv(SLOW_COPY_ENV, "30")
    clock = Clock()
    return CheckpointPruner(keep=2, clock=clock), clock


def test_an_old_checkpoint_goes_two_snapshots_and_a_copys_time_after_it_fell_out(pruner, tmp_path):
    pruner, clock = pruner
    trial = tmp_path / "search" / "t1"
    for index in range(4):
        pruner.on_checkpoint(0, [], None, make_checkpoint(trial, index))
    # checkpoint 0 and 1 fell out of the newest two; no snapshot since: the storage's may name them
    assert on_disk(trial) == [f"checkpoint_{i:06d}" for i in range(4)]
    pruner.get_state()  # the first snapshot after: names 3, but its copy may not have landed
    clock.now = 100.0
    pruner.get_state()  # the second, taken now: the first's copy may still be skipped or running
    assert len(on_disk(trial)) == 4
    clock.now = 129.0
    pruner.get_state()
    assert len(on_disk(trial)) == 4  # the second is 29 s old, under Tune's 30 s bound on a copy
    clock.now = 130.0
    pruner.get_state()
    assert on_disk(trial) == ["checkpoint_000002", "checkpoint_000003"]


def test_the_end_of_the_run_leaves_each_trial_its_newest_kept(pruner, tmp_path):
    pruner, _ = pruner
    trials = [tmp_path / "search" / name for name in ("a", "b", "c")]
    for made, trial in zip((5, 2, 1), trials, strict=True):
        for index in range(made):
            pruner.on_checkpoint(0, [], None, make_checkpoint(trial, index))
    pruner.on_experiment_end([])  # after Tune's last snapshot, written and copied (force, wait)
    assert [on_disk(t) for t in trials] == [
        ["checkpoint_000003", "checkpoint_000004"],
        ["checkpoint_000000", "checkpoint_000001"],
        ["checkpoint_000000"],
    ]


def test_a_checkpoint_after_the_reported_one_is_left_alone(pruner, tmp_path):
    # A killed attempt's checkpoint that Tune never registered sits at the next index; the retry reports
    # the checkpoint before it and later overwrites that folder. Only folders up to the reported one count.
    pruner, _ = pruner
    trial = tmp_path / "t"
    for index in range(3):
        make_checkpoint(trial, index)
    make_checkpoint(trial, 5)
    pruner.on_checkpoint(0, [], None, make_checkpoint(trial, 3))
    pruner.on_experiment_end([])
    assert on_disk(trial) == ["checkpoint_000002", "checkpoint_000003", "checkpoint_000005"]


def test_a_resumed_run_prunes_what_the_earlier_session_left(pruner, tmp_path):
    # The queue lives in one driver session; tuner.pkl (what --resume unpickles) holds an empty one, and
    # the leftovers are found by listing the trial's folder at its next checkpoint.
    pruner, _ = pruner
    trial = tmp_path / "t"
    for index in range(3):
        pruner.on_checkpoint(0, [], None, make_checkpoint(trial, index))
    resumed = pickle.loads(pickle.dumps(pruner))
    assert resumed.queued == {} and resumed.snapshot_times == [] and resumed.keep == 2
    resumed.on_checkpoint(0, [], None, make_checkpoint(trial, 3))
    resumed.on_experiment_end([])
    assert on_disk(trial) == ["checkpoint_000002", "checkpoint_000003"]


def test_a_checkpoint_already_gone_is_no_error(pruner, tmp_path):
    pruner, _ = pruner
    trial = tmp_path / "t"
    for index in range(3):
        pruner.on_checkpoint(0, [], None, make_checkpoint(trial, index))
    for folder in trial.glob("checkpoint_000000"):
        (folder / "state.json").unlink()
        folder.rmdir()
    pruner.on_experiment_end([])
    assert on_disk(trial) == ["checkpoint_000001", "checkpoint_000002"]
    with pytest.raises(ValueError, match="keep"):
        CheckpointPruner(keep=0)
