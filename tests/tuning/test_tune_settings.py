"""Tune's run settings that set what the bookkeeping costs: checkpoints kept, result loggers; and the
result.json logger that keeps a restarted trial's lines (issue 24)."""

import json
import os
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
from ray.tune.logger import JsonLoggerCallback, TBXLoggerCallback

from tests.conftest import BUCKET
from tuning import tune_settings


def test_tune_keeps_every_checkpoint_so_it_never_forces_a_snapshot():
    # None is Tune's "keep every checkpoint": the setting under which it never forces a snapshot; the
    # pruner keeps --keep-checkpoints per trial instead (tests/tuning/test_checkpoint_pruning.py).
    assert tune_settings.checkpoint_config().num_to_keep is None
    assert tune_settings.CHECKPOINTS_KEPT == 2


@pytest.mark.parametrize(("kept", "pruned"), [(2, 2), (5, 5), (0, None)])
def test_kept_checkpoints_are_the_pruners_and_zero_keeps_all(kept, pruned, built_run_config):
    from tuning.checkpoint_pruning import CheckpointPruner

    run_config = built_run_config(keep_checkpoints=kept)
    pruners = [cb.keep for cb in run_config.callbacks if isinstance(cb, CheckpointPruner)]
    assert pruners == ([] if pruned is None else [pruned])
    assert run_config.checkpoint_config.num_to_keep is None


def test_result_loggers_are_json_only_with_tunes_automatic_ones_off(monkeypatch):
    # TensorBoard's event files are the trials' own (trainables.events), copied by Tune's artifact sync.
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    loggers = tune_settings.result_loggers()
    kinds = {type(cb) for cb in loggers}
    assert tune_settings.KeepingJsonLogger in kinds and tune_settings.EventsLogger not in kinds
    assert tune_settings.sync_config().sync_artifacts
    # Tune prints a TensorBoard line naming its /tmp staging folder for any TBXLoggerCallback it is given.
    assert not any(isinstance(cb, TBXLoggerCallback) for cb in loggers)
    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"


@pytest.mark.parametrize("auto_loggers_off", ["1", "0"])
def test_tune_adds_no_json_logger_beside_ours(auto_loggers_off, monkeypatch):
    """Tune adds its own JsonLoggerCallback only when no callback is one (and none with its automatic
    loggers off): either way the only result.json writer is the one that keeps restarted trials' lines."""
    from ray.tune.utils.callback import _create_default_callbacks

    loggers = tune_settings.result_loggers()
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", auto_loggers_off)
    callbacks = _create_default_callbacks(loggers, air_verbosity=None)
    assert [type(c) for c in callbacks if isinstance(c, JsonLoggerCallback)] == [tune_settings.KeepingJsonLogger]


# ---- a restarted trial's result.json ------------------------------------------------------------------


def lines(*epochs: int) -> bytes:
    return b"".join(json.dumps({"epoch": e}).encode() + b"\n" for e in epochs)


class RestartedTrial:
    """What Tune's JSON logger reads of a trial it starts again: the driver's staging folder, the trial's
    folder on the storage, and whether it has a checkpoint to restart from."""

    def __init__(self, local: str, fs: pafs.FileSystem, fs_path: str, checkpoint: bool = True) -> None:
        self.local_path, self.config = local, {"model": "basenet"}
        self.checkpoint = object() if checkpoint else None
        self.storage = SimpleNamespace(trial_fs_path=fs_path, storage_filesystem=fs)

    def init_local_path(self) -> None:
        os.makedirs(self.local_path, exist_ok=True)


def restart_and_report(trial: RestartedTrial, epoch: int) -> bytes:
    """The driver restarts the trial (after its worker died, or on --resume) and logs its next report;
    returns the driver's result.json."""
    (logger,) = [cb for cb in tune_settings.result_loggers() if isinstance(cb, JsonLoggerCallback)]
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"epoch": epoch})
    logger.log_trial_end(trial)
    return (trial.storage.local / "result.json").read_bytes()


@pytest.fixture(params=["local", "s3"])
def trial_storage(request, tmp_path):
    """(pyarrow filesystem, the trial's folder on it): a local folder, or a bucket of a moto S3 server."""
    if request.param == "local":
        (tmp_path / "storage" / "t").mkdir(parents=True)
        return pafs.LocalFileSystem(), str(tmp_path / "storage" / "t")
    _, _, bucket_fs = request.getfixturevalue("s3_server")
    return bucket_fs, f"{BUCKET}/exp/search/t"


def trial_with(tmp_path, trial_storage, own: bytes | None, stored: bytes | None, checkpoint: bool = True):
    fs, fs_path = trial_storage
    local = tmp_path / "staging" / "t"
    local.mkdir(parents=True)
    if own is not None:
        (local / "result.json").write_bytes(own)
    if stored is not None:
        with fs.open_output_stream(f"{fs_path}/result.json") as f:
            f.write(stored)
    trial = RestartedTrial(str(local), fs, fs_path, checkpoint)
    trial.storage.local = local
    return trial


def test_a_worker_restarted_from_its_checkpoint_keeps_the_lines_written_since_the_last_sync(tmp_path, trial_storage):
    """Issue 24: the driver logged epochs 1-3, the last snapshot synced 1-2; Tune's own logger copied the
    storage's copy back and epoch 3 was gone for good (the next sync uploaded the shortened file)."""
    trial = trial_with(tmp_path, trial_storage, own=lines(1, 2, 3), stored=lines(1, 2))
    assert restart_and_report(trial, 4) == lines(1, 2, 3, 4)


def test_a_storage_copy_cut_mid_line_is_still_an_older_copy(tmp_path, trial_storage):
    trial = trial_with(tmp_path, trial_storage, own=lines(1, 2, 3), stored=lines(1, 2, 3)[:-7])
    assert restart_and_report(trial, 4) == lines(1, 2, 3, 4)


def test_a_resumed_driver_without_its_own_file_takes_the_storages(tmp_path, trial_storage):
    """A new driver session (or one on another machine) has no staging file: the storage's copy is it."""
    trial = trial_with(tmp_path, trial_storage, own=None, stored=lines(1, 2))
    assert restart_and_report(trial, 3) == lines(1, 2, 3)


def test_a_storage_copy_longer_than_the_drivers_file_is_kept_and_a_cut_line_stays_alone(tmp_path, trial_storage):
    """The storage's copy extends the driver's file and ends mid-line (its writer was killed): it is
    kept, and the next report is a line of its own, not glued to the cut one."""
    trial = trial_with(tmp_path, trial_storage, own=lines(1), stored=lines(1, 2)[:-3])
    assert restart_and_report(trial, 2).splitlines() == [b'{"epoch": 1}', b'{"epoch": ', b'{"epoch": 2}']


def test_two_histories_are_both_kept_the_storages_first(tmp_path, trial_storage):
    """Neither file is a copy of the other (an earlier driver's lines in storage, this driver's own
    since): both stay, the earlier first, so the later report of an epoch is this driver's."""
    trial = trial_with(tmp_path, trial_storage, own=lines(3), stored=lines(1, 2, 3)[:-3])
    assert restart_and_report(trial, 4).splitlines() == [*lines(1, 2, 3)[:-3].splitlines(), *lines(3, 4).splitlines()]


def test_a_trial_restarting_from_scratch_restores_nothing(tmp_path, trial_storage):
    """As Tune: without a checkpoint the trial reports every epoch again; what the driver has stays."""
    trial = trial_with(tmp_path, trial_storage, own=lines(1), stored=lines(1, 2), checkpoint=False)
    assert restart_and_report(trial, 1) == lines(1, 1)
