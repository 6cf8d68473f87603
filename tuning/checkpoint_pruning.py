"""At most `--keep-checkpoints` checkpoints per trial on the storage, without Tune's forced snapshots.

Tune can keep N checkpoints per trial itself (`CheckpointConfig(num_to_keep=N)`), but then it *forces* an
experiment-state snapshot (every trial's state as JSON plus the searcher: O(trials)) whenever a trial has
made N checkpoints since the last one, so that no snapshot on the storage names a checkpoint it has
deleted (its own code calls this "a non-performant workaround", ray.tune.execution.experiment_state). At
one or two checkpoints per trial that is a snapshot per trial, and the driver's time per trial grew with
the number of trials (benchmarks/README.md, issue 11: 100 -> 490 ms over 1,000 trivial trials).

Here Tune keeps every checkpoint (no num_to_keep, so nothing is forced and snapshots follow Tune's own
period: >= 10 s, about 5 % of the driver's time) and this callback deletes the older ones, but only once
no snapshot that could be the storage's latest names them. A checkpoint that falls out of its trial's
newest `keep` is queued. Tune names in a snapshot the latest checkpoint of each trial, so every snapshot
taken after that names a newer one; Tune copies a snapshot to the storage in the background, and skips
the copy while the previous one still runs. So a queued checkpoint is deleted once two snapshots were
taken after it fell out and the second is older than Tune's own bound on a copy (the seconds beyond which
it warns that a copy "may cause consistency issues upon restoration":
TUNE_WARN_SLOW_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S, 30 by default): the copy of the first, or of a
later one, has landed by then. A retried trial restores its latest checkpoint, which is never queued; a
resumed experiment restores the one its snapshot names, which is still on the storage. When the run
ends Tune writes a last snapshot and waits for its copy (ray.tune.tune: `checkpoint(force=True,
wait=True)`) before `on_experiment_end`, which deletes every queued checkpoint: at the end each trial
keeps its newest `keep`. Disk per trial during the run: `keep` plus what it checkpoints in about two
snapshot periods and the copy bound.

Tune's snapshots still list every checkpoint a trial made (in its checkpoint manager), deleted or not;
only the latest is ever restored.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"  # Tune's checkpoint folders: checkpoint_000000, checkpoint_000001, ...
SNAPSHOTS_BEFORE_DELETE = 2  # snapshots taken after a checkpoint fell out of the kept ones (see above)
SLOW_COPY_ENV = "TUNE_WARN_SLOW_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"  # Tune's, read as Tune reads it
SLOW_COPY_DEFAULT_S = 30.0  # Tune's default for it, in seconds


def copy_bound_s() -> float:
    """Seconds within which Tune expects a snapshot's copy to the storage to land."""
    return float(os.environ.get(SLOW_COPY_ENV, SLOW_COPY_DEFAULT_S))


class CheckpointPruner(Callback):
    """Keeps each trial's newest `keep` checkpoints on the storage and deletes the older ones once no
    experiment snapshot on the storage can name them. Module-level, so the Tuner's pickle (tuner.pkl,
    which --resume unpickles) names this class rather than holding a copy of its code."""

    def __init__(self, keep: int, clock: Callable[[], float] = time.monotonic) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1 checkpoint per trial, got {keep}")
        self.keep = keep
        self.clock = clock
        self.snapshot_times: list[float] = []  # when Tune took each snapshot of this driver session (clock s)
        self.queued: dict[str, tuple[int, Any]] = {}  # path -> (snapshots taken when it fell out, filesystem)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into tuner.pkl when the run starts: the queue belongs to one driver session (a resumed
        # run finds leftovers by listing the trial's folder at its next checkpoint).
        return {"keep": self.keep, "clock": time.monotonic, "snapshot_times": [], "queued": {}}

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """Queue every checkpoint folder of the trial up to this one but the newest `keep`. Listed from the
        storage, so folders left by an earlier driver session (a resumed run) are found too; a folder after
        this one (an attempt's checkpoint that was never reported, which a retry overwrites) is left alone."""
        import pyarrow.fs as pafs

        fs, path = checkpoint.filesystem, checkpoint.path
        trial_dir = path.rstrip("/").rsplit("/", 1)[0]
        try:
            entries = fs.get_file_info(pafs.FileSelector(trial_dir))
        except OSError:
            logger.warning("cannot list %s; its old checkpoints are kept", trial_dir, exc_info=True)
            return
        # Tune numbers them with six digits, so the names sort as the checkpoints were made.
        folders = sorted(
            e.path
            for e in entries
            if e.type == pafs.FileType.Directory and e.base_name.startswith(CHECKPOINT_PREFIX) and e.path <= path
        )
        for old in folders[: -self.keep]:
            self.queued.setdefault(old, (len(self.snapshot_times), fs))

    def get_state(self) -> dict | None:
        """Tune calls this once per experiment snapshot, as it writes the snapshot (CallbackList.save_to_dir)
        and before it copies it to the storage: the clock the deletions wait on."""
        now = self.clock()
        self.snapshot_times.append(now)
        self.delete(lambda queued_at: self.safe(queued_at, now))
        return None  # no state of its own in the snapshot

    def safe(self, queued_at: int, now: float) -> bool:
        """Whether a checkpoint that fell out when `queued_at` snapshots had been taken can no longer be
        named by the storage's snapshot (see the module docstring)."""
        second_after = queued_at + SNAPSHOTS_BEFORE_DELETE - 1  # index of the second snapshot after it
        return len(self.snapshot_times) > second_after and now - self.snapshot_times[second_after] >= copy_bound_s()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.delete(None)  # the last snapshot, naming none of them, is on the storage (see above)

    def delete(self, due: Callable[[int], bool] | None) -> None:
        """Delete the queued checkpoints `due` says are safe (None: all)."""
        for path, (queued_at, fs) in list(self.queued.items()):
            if due is not None and not due(queued_at):
                continue
            del self.queued[path]
            try:
                fs.delete_dir(path)
            except FileNotFoundError:
                pass  # already gone (deleted by hand, or by Tune itself in an older experiment)
            except OSError:
                logger.warning("cannot delete the old checkpoint %s", path, exc_info=True)
