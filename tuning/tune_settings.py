"""The Tuner and the Ray Tune run settings that decide what the bookkeeping costs per trial.

`build_tuner` is the one place a Tuner is built: the driver's phases, the replay engine and the
bookkeeping benchmark (benchmarks/bookkeeping.py) all call it, so what they measure is what runs.

Profiled (cProfile of the driver, 300 trivial trials, ASHA + Optuna TPE, one checkpoint per epoch,
benchmarks/README.md): the cost that grew with the number of trials was Tune's experiment-state
snapshot (every trial's state as JSON plus the pickled searcher, i.e. O(trials) each time), which
Tune *forces* after every `num_to_keep` checkpoints of a trial, so that the snapshot never names a
checkpoint that has since been deleted: about one per trial. So Tune is given no num_to_keep, and a callback
(tuning.checkpoint_pruning) deletes each trial's checkpoints but the newest `--keep-checkpoints`, once no
snapshot on the storage can name them. The snapshot a trial's `--keep-checkpoints` checkpoints forced is
still taken (tuning.snapshots), but only while the snapshots have taken at most a tenth of the driver's
time: a small experiment snapshots as before, a large one in a fixed share of its time. Fault tolerance is
unchanged: a retried trial restores its latest checkpoint, which Tune tracks in memory and which is never
deleted; a resumed experiment restores the latest checkpoint the last snapshot names, which is kept on
the storage until a later snapshot is there.

The per-result loggers: the tables read result.json (KeepingJsonLogger, Tune's JsonLoggerCallback
with the restore below); Tune's CSV logger wrote the same rows once more per result and is off. Users
read TensorBoard's event files, which each trial writes in its own process (trainables.events, in the form
Tune's TBXLoggerCallback wrote them from the driver) and Tune copies to the storage (sync_config).

Why not Tune's JsonLoggerCallback as it is (issue 24): the driver appends each result to result.json in
its local staging folder, which reaches the storage path only with an experiment snapshot (every >= 10 s,
or forced every `num_to_keep` checkpoints of a trial). When a trial restarts after its worker died, Tune's
`JsonLoggerCallback.log_trial_start` calls `LoggerCallback._restore_from_remote`, which, for a trial with
a checkpoint, copies the storage's result.json over the driver's own: the lines written since the last
snapshot were gone. A trial killed after reporting and checkpointing epoch 5 continued from that
checkpoint with no epoch 5 in its table, so it counted one epoch short of its budget: `stopped`, no test
accuracy.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.air.constants import EXPR_RESULT_FILE
from ray.tune.logger import JsonLoggerCallback, LoggerCallback

from tuning import METRIC, MODE

logger = logging.getLogger(__name__)

# Checkpoints kept per trial on the storage (older ones are deleted, tuning.checkpoint_pruning): the latest,
# plus the one before.
CHECKPOINTS_KEPT = 2
# A reused worker is replaced between two trials once its resident memory is this many % above what it was
# after its first trial (tuning.worker_memory); 0: never.
WORKER_MEMORY_GROWTH = 10.0


def checkpoint_config():  # noqa: ANN201 - tune.CheckpointConfig
    """Tune's checkpoint settings: Tune keeps every checkpoint itself (no num_to_keep), so it never forces
    an experiment snapshot (every trial's state: O(trials)) on its own; the CheckpointPruner callback of
    build_tuner keeps --keep-checkpoints per trial on the storage instead, and tuning.snapshots forces the
    snapshots within a budget. Forced by Tune at every num_to_keep checkpoints, the snapshots cost 314 against
    63 ms of driver time per trial over 1,000 trivial trials (benchmarks/README.md, issue 11). Each kept
    checkpoint costs disk: BaseNet's is ~0.14 MB, the reference ConvNet's ~2.4 MB."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=None)


def result_loggers() -> list:
    """The driver's per-result loggers: result.json for the tables (TensorBoard's event files are the
    trials' own, trainables.events), with Tune's automatic loggers (which add a CSV copy) switched off
    (Tune's documented TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, read by the driver when the run starts). Tune
    would not add its own JsonLoggerCallback beside KeepingJsonLogger anyway: it adds one only when no
    callback is an instance of that class (ray.tune.utils.callback._create_default_callbacks)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    return [KeepingJsonLogger(), stop_when_storage_full()]


def sync_config():  # noqa: ANN201 - tune.SyncConfig
    """Tune copies each trial's working folder to its folder on the storage with every checkpoint and when
    the trial stops: the TensorBoard event files the trial writes itself (trainables.events) get there so."""
    from ray import tune

    return tune.SyncConfig(sync_artifacts=True)


class EventsLogger(LoggerCallback):
    """No longer used (trials write their own event files, trainables.events); kept because the tuner.pkl
    of an experiment started before names it, and --resume unpickles that. TensorBoard's event files,
    written by Tune's TBXLoggerCallback (per-epoch scalars, the knobs as hparams), held rather than
    subclassed: Tune prints a `tensorboard --logdir` line naming its
    /tmp/ray staging folder whenever a callback *is* a TBXLoggerCallback (ray.tune.tune,
    `tensorboard_path`), while the events land in the experiment folder, the one the driver names."""

    def __init__(self) -> None:
        from ray.tune.logger import TBXLoggerCallback

        self.events = TBXLoggerCallback()

    def log_trial_start(self, trial: Any) -> None:
        self.events.log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        self.events.log_trial_result(iteration, trial, result)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self.events.log_trial_end(trial, failed)


class KeepingJsonLogger(JsonLoggerCallback):
    """Tune's result.json logger, except that a restarted trial never loses the lines the driver holds.

    Where Tune copies the storage's result.json over the driver's (see the module docstring), this keeps
    whichever holds every line: the driver's own file while the storage's copy is an older sync of it (a
    worker died, this driver lives on), the storage's copy where the driver has none (a driver resumed
    in a new session or on another machine, s3:// storage), and both, the storage's lines first, where
    neither is a copy of the other. Module-level, so the Tuner's pickle (tuner.pkl, which --resume
    unpickles) names this class rather than holding a copy of its code."""

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if file_name != EXPR_RESULT_FILE:
            super()._restore_from_remote(file_name, trial)
            return
        if not trial.checkpoint:
            return  # as Tune: a trial restarting from scratch reports every epoch again
        local = Path(trial.local_path, file_name)
        remote = Path(trial.storage.trial_fs_path, file_name).as_posix()
        try:
            with trial.storage.storage_filesystem.open_input_stream(remote) as f:
                stored: bytes | None = f.read()
        except FileNotFoundError:
            stored = None  # never synced: the driver's file is all there is
        except OSError:
            logger.exception("cannot read %s; keeping the driver's own result.json", remote)
            return
        own = local.read_bytes() if local.exists() else None
        kept = kept_results(own, stored)
        if kept is not None and kept != own:
            tmp = local.with_name(f".{local.name}.tmp")
            tmp.write_bytes(kept)
            tmp.replace(local)  # the logger opens it to append next; never half-written


def kept_results(own: bytes | None, stored: bytes | None) -> bytes | None:
    """What a restarted trial's result.json holds, from the driver's file (`own`) and the storage's copy
    (`stored`); None when neither exists. Only ever lines added, never lines dropped: the table builder
    keeps the later of two reports of an epoch (analysis.tables)."""
    if not stored:
        return own
    if not own or stored.startswith(own):
        return whole_lines(stored)
    if own.startswith(stored):  # an older sync of this very file (cut mid-line, even)
        return own
    # Two histories (an earlier driver's lines in storage, this driver's own since): both, the earlier
    # first.
    return whole_lines(stored) + own


def whole_lines(text: bytes) -> bytes:
    """`text` ending with a newline, so what is appended next is a line of its own: a line a killed
    writer left cut short is then skipped alone (analysis.tables), not glued to the next report."""
    return text if text.endswith(b"\n") else text + b"\n"


class StorageFull(OSError):
    """A trial could not write to the experiment's storage: the device is full (ENOSPC)."""


def stop_when_storage_full():  # noqa: ANN201 - a ray.tune.Callback
    """A Tune callback that ends the run when a trial failed for want of space on the storage: Tune would
    retry it from scratch (its checkpoint was never written) and start the next trials, each failing the
    same way. Raised from a callback, StorageFull leaves tuner.fit() (Tune stops the trials and keeps
    the experiment state it last wrote), and the driver stops with one message."""
    from ray.tune import Callback

    class StopWhenStorageFull(Callback):
        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.check(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.check(trial)

        @staticmethod
        def check(trial: Any) -> None:
            # The error file Tune keeps on the driver's local disk (the storage may not hold it).
            try:
                with open(trial.error_file) as f:
                    text = f.read()
            except (OSError, TypeError):
                return
            if "No space left on device" in text or "[Errno 28]" in text:
                raise StorageFull(errno.ENOSPC, f"trial {trial.trial_id} could not write to the storage")

    return StopWhenStorageFull()


def trainable(
    data: Any, *, cpus: float, gpus: float, checkpoint_every: int, plugins: tuple[str, ...], shipped: bool
) -> Any:
    """trainables.trainable.train_trial with its resources and the dataset, which reaches the workers
    through Ray's object store (one copy per node, read zero-copy)."""
    from ray import tune

    from trainables.trainable import train_trial

    return tune.with_resources(
        tune.with_parameters(
            train_trial,
            data=data,
            cpus=cpus,
            gpus=gpus,
            checkpoint_every=checkpoint_every,
            plugins=plugins,
            shipped=shipped,
        ),
        {"cpu": cpus, "gpu": gpus},
    )


def trial_dirname(trial: Any) -> str:
    """Trial folders named by trial id alone: short, unique, and what the tables call them."""
    return str(trial.trial_id)


def build_tuner(
    trainable: Any,
    *,
    name: str,
    storage_path: str,
    num_samples: int,
    search_alg: Any,
    scheduler: Any,
    param_space: dict[str, Any] | None = None,
    max_concurrent: int | None = None,
    reuse_actors: bool = True,
    keep_checkpoints: int = CHECKPOINTS_KEPT,
    worker_memory_growth: float = WORKER_MEMORY_GROWTH,
    max_failures: int = 0,
    verbose: int = 0,
    callbacks: Sequence[Any] | None = None,
    stop: Any = None,
    metric: str = METRIC,
    mode: str = MODE,
) -> Any:
    """A Tuner for one phase `name` (a folder under `storage_path`): trials named by id, `keep_checkpoints`
    per trial on the storage (0: all), a reused worker replaced once its memory has grown more than
    `worker_memory_growth` % (0: never), `callbacks` (default: result_loggers(), the per-result loggers the
    tables read)."""
    from ray import tune

    from tuning import snapshots, worker_memory
    from tuning.checkpoint_pruning import CheckpointPruner

    callbacks = result_loggers() if callbacks is None else list(callbacks)
    snapshots.install()  # snapshots whose state files appear whole on a local storage (tuning.atomic_storage)
    if keep_checkpoints:
        callbacks.append(CheckpointPruner(keep_checkpoints))  # and one every keep_checkpoints checkpoints of a trial
    if worker_memory_growth and reuse_actors:
        callbacks.append(worker_memory.WorkerMemoryLimit(worker_memory_growth))
        worker_memory.install()
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=max_concurrent,
            trial_dirname_creator=trial_dirname,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            stop=stop,
            checkpoint_config=checkpoint_config(),
            sync_config=sync_config(),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=verbose,
        ),
    )


def restore_tuner(path: str, trainable: Any) -> Any:
    """The Tuner stored at `path` (a phase folder), for --resume: the searcher's and scheduler's state
    and the trials come back; finished trials are not re-run, errored ones continue from their last
    checkpoint."""
    import sys

    from ray import tune

    from tuning import optuna_search, schedulers, snapshots, worker_memory

    # Experiments started before the Tune side had its own package pickled its searcher and scheduler
    # under their old module paths; the same classes live here now.
    for old, module in (("search_spaces.optuna_search", optuna_search), ("search_spaces.schedulers", schedulers)):
        sys.modules.setdefault(old, module)
    sys.modules.setdefault("trainables.tune_settings", sys.modules[__name__])
    snapshots.install()  # the pickled callbacks hold the CheckpointPruner, if the run had one; atomic state
    worker_memory.install()  # and the WorkerMemoryLimit
    return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
