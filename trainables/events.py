"""TensorBoard event files, written by the trial's own process.

What Tune's TBXLoggerCallback wrote from the driver, in the same form: one scalar per reported metric
as `ray/tune/<metric>` at step = the epoch (Tune's training_iteration: one report per epoch), and the
trial's knobs as TensorBoard hparams. On the driver, tensorboardX fsync'ed the trial's file after every
result, about a tenth of the driver's time over many small trials (benchmarks/README.md, issue 11);
here each trial pays for its own, in parallel. The files go to the trial's working folder, which Tune
copies to the trial's folder on the storage with each checkpoint and when the trial stops
(`SyncConfig(sync_artifacts=True)`, tuning.tune_settings), so they end where they were.

The hparams are written with the first epoch, not when the trial ends as the driver did: ASHA stops a
trial between two reports, and no code of the trial runs after its last.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, ClassVar

import numpy as np

TAG_PREFIX = "ray/tune/"  # Tune's TBXLoggerCallback's, so dashboards and readers see the tags they saw
SKIPPED = ("pid",)  # identifies the process, not a quantity (Tune's logger drops it too)
HPARAM_TYPES = (str, bool, int, float, type(None))  # what TensorBoard's hparams take


def working_folder() -> str:
    """The trial's working folder, the one Tune copies to the trial's folder on the storage: Tune makes it
    the process's working directory at the start of every trial, a reused worker's too
    (RAY_CHDIR_TO_TRIAL_DIR, on by default; Trainable._setup_logdir). The session's `get_trial_dir()`
    names it only in a reused worker: in a fresh one it names the driver's staging folder, a path on the
    driver's node (Ray 2.60, FunctionTrainable.setup against reset_config)."""
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        return os.getcwd()
    from ray import tune

    return tune.get_context().get_trial_dir()


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The reported metrics TensorBoard plots: finite-or-inf numbers (NaN dropped, as Tune's logger does),
    under their tags."""
    out = {}
    for key, value in metrics.items():
        if key in SKIPPED or isinstance(value, bool) or not isinstance(value, int | float | np.number):
            continue
        if not math.isnan(float(value)):
            out[TAG_PREFIX + key] = float(value)
    return out


def hparams_of(params: dict[str, Any]) -> dict[str, Any]:
    """The trial's knobs that TensorBoard's hparams can hold (NumPy scalars as Python ones)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, HPARAM_TYPES):
            out[key] = value
    return out


class TrialEvents:
    """One trial's event file, written synchronously: tensorboardX's SummaryWriter queues events for a
    thread of its own, so an epoch written just before the report could still be in that queue when Tune
    copies the folder (measured: the last epoch of a finished trial was missing). A reused worker runs
    trials one after another: opening one closes the previous trial's (which ASHA may have stopped before
    it could close it)."""

    _open: ClassVar[TrialEvents | None] = None

    def __init__(self, params: dict[str, Any], logdir: str) -> None:
        from tensorboardX.event_file_writer import EventsWriter

        if TrialEvents._open is not None:
            TrialEvents._open.close()
        os.makedirs(logdir, exist_ok=True)
        self.writer = EventsWriter(os.path.join(logdir, "events"))  # events.out.tfevents.<time>.<host>
        self.closed = False
        self.hparams = hparams_of(params)
        self.hparams_written = False
        TrialEvents._open = self

    def write(self, metrics: dict[str, Any], step: int) -> None:
        """One epoch's report, on the file before this returns, so that Tune's next copy holds it."""
        from tensorboardX.summary import hparams, scalar

        values = scalars(metrics)
        for tag, value in values.items():
            self._event(scalar(tag, value), step)
        if not self.hparams_written:  # as Tune's logger wrote them: without a step
            for summary in hparams(hparam_dict=self.hparams, metric_dict=values):
                self._event(summary, None)
            self.hparams_written = True
        self.writer.flush()

    def _event(self, summary: Any, step: int | None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        event = Event(wall_time=time.time(), summary=summary)
        if step is not None:
            event.step = step
        self.writer.write_event(event)

    def close(self) -> None:
        if not self.closed:
            self.writer.close()
            self.closed = True
        if TrialEvents._open is self:
            TrialEvents._open = None
