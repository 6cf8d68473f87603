"""A reused worker whose resident memory has grown too far is replaced between two trials (--worker-memory-growth).

A reused worker grows ~11 MB per small trial (benchmarks/README.md, issue 11): every Keras `fit` leaves its
train-step graph behind, and nothing in the trial can free it. TensorFlow keeps each graph's operations in a
C++ map (the graph's `_nodes_by_id`) that refers to the Python operations, which refer back to the graph: a
cycle through an object Python's garbage collector cannot see into, so the collector never frees it (an
operation's reference count is one above what the collector finds; keras-team/keras#17458,
tensorflow/tensorflow#61791). Only the process's end returns the memory.

Tune has no setting that retires a reused worker: a `reset_config` that returns False *fails* the next trial
(Ray 2.60, `TuneController._on_trial_reset`: "Trainable runner reuse requires reset_config() to be
implemented and return True", an error and, with --max-failures, a retry). What Tune does have is the moment
it decides whether to keep a finished trial's worker for the next trial (`_maybe_cache_trial_actor`): it
keeps none when no pending trial asks for its resources, and then stops the worker gracefully and starts a
new one for the next trial, as for any trial without a cached worker. So the driver answers "no" there too
when the finished trial's last report says its worker's memory has grown past the limit: the trial has
ended normally, its results and checkpoints are in, and the next trial starts in a fresh process (a fresh
start's seconds instead of a reused one's fraction, once per replacement) without failing or retrying.

Each trial reports its worker's resident memory with every epoch (`worker_rss_mb`, trainables.callbacks);
a worker's baseline is what it reported at the end of its first trial, and it is replaced once a trial ends
with more than `growth` above that. The limit is relative because the baseline depends on the dataset
and the model (digits and BaseNet ~0.8 GB here, TensorFlow itself most of it). `install()` makes Tune's
controller ask this callback, when it is one of the controller's callbacks; the names are Ray 2.60's
private ones (pyproject pins 2.60.x) and tests/tuning/test_worker_memory.py builds a real controller.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from trainables.runtime import RSS_KEY  # the result key each report carries (trainables.callbacks)

logger = logging.getLogger(__name__)


class WorkerMemoryLimit(Callback):
    """Tells Tune's controller not to keep a finished trial's worker for another trial once the worker's
    resident memory has grown more than `growth_percent` % above what it was after the worker's first trial.
    Module-level, so the Tuner's pickle (tuner.pkl, which --resume unpickles) names this class."""

    def __init__(self, growth_percent: float) -> None:
        if growth_percent <= 0:
            raise ValueError(f"growth_percent must be > 0 (0 is: no limit, no callback), got {growth_percent}")
        self.growth_percent = growth_percent
        self.baselines: dict[tuple[Any, Any], float] = {}  # (node, pid) -> MB after the worker's first trial
        self.replaced = 0  # workers replaced in this driver session

    def __getstate__(self) -> dict[str, Any]:
        # The baselines belong to this driver session's workers; a resumed run starts new ones.
        return {"growth_percent": self.growth_percent, "baselines": {}, "replaced": 0}

    def keep_worker(self, result: dict[str, Any] | None) -> bool:
        """Whether the worker that reported `result`, its trial's last, may run another trial."""
        result = result or {}
        rss = result.get(RSS_KEY)
        if rss is None or "pid" not in result:
            return True  # a trainable that does not report its memory (a replay, a test's)
        worker = (result.get("node") or result.get("hostname"), result["pid"])
        baseline = self.baselines.setdefault(worker, float(rss))
        limit = baseline * (1 + self.growth_percent / 100)
        if rss <= limit:
            return True
        del self.baselines[worker]
        self.replaced += 1
        logger.info(
            "worker %s replaced after this trial: %.0f MB resident, over %.0f MB (%.0f MB after its first trial "
            "+ %g %%, --worker-memory-growth)",
            worker[1],
            rss,
            limit,
            baseline,
            self.growth_percent,
        )
        return False


def install() -> None:
    """Make Tune's controller ask a WorkerMemoryLimit among its callbacks before it keeps a finished trial's
    worker for the next trial; idempotent."""
    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController._maybe_cache_trial_actor, "memory_limited", False):
        return
    tunes_own = TuneController._maybe_cache_trial_actor

    def maybe_cache_trial_actor(controller: Any, trial: Any) -> bool:
        limits = [cb for cb in controller._callbacks._callbacks if isinstance(cb, WorkerMemoryLimit)]
        if limits and not limits[0].keep_worker(trial.last_result):
            return False  # Tune stops the worker gracefully and starts a new one for the next trial
        return tunes_own(controller, trial)

    maybe_cache_trial_actor.memory_limited = True  # type: ignore[attr-defined]
    TuneController._maybe_cache_trial_actor = maybe_cache_trial_actor  # type: ignore[method-assign,assignment]
