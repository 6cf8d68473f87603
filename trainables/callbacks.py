"""The Keras side of a trial's reporting: one Ray Tune report per epoch, a checkpoint every N epochs.

Every report also carries the model's cost (trainables.cost: parameter count, MACs per image,
inference seconds per image at batch 1 and at a large batch, and the device). It is measured once per
trial, at the end of the first epoch the trial trains in its process, not after the last: ASHA stops a
trial between two reports, so no code of the trial runs after its last epoch. The cost does not depend
on the weights' values, so the first epoch's model times like the last one's; a restored trial measures
again (it may have moved to another node or device), and the table keeps the last report's figures.
The measurement (a second or so on CPU) is inside Ray's `time_this_iter_s` of that epoch, not inside
`epoch_time_s`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import ray
from ray import tune

from trainables.config import TrialConfig
from trainables.events import TrialEvents
from trainables.runtime import RSS_KEY, resident_mb

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"


class EpochReporter(keras.callbacks.Callback):
    """Reports one row per epoch, with a checkpoint every `checkpoint_every` epochs and at the full
    budget; evaluates the test split once, at full budget."""

    def __init__(
        self,
        config: TrialConfig,
        test_ds,  # noqa: ANN001 - tf.data.Dataset
        gpus: float,
        checkpoint_every: int = 1,
        events: TrialEvents | None = None,
    ) -> None:
        super().__init__()
        self.events = events  # TensorBoard's event file of the trial, written before each report
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {checkpoint_every}")
        self.config = config
        self.test_ds = test_ds
        self.gpus = gpus
        self.checkpoint_every = checkpoint_every
        self._started = 0.0
        self._cost: dict[str, Any] | None = None  # measured at this process's first epoch end
        # Hostname plus Ray node id: two Ray nodes on one host are still told apart.
        self.node = f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:12]}"

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        done = epoch + 1  # Keras counts from 0; ASHA's time unit counts epochs completed
        metrics: dict[str, Any] = {
            "epoch": done,
            "loss": float(logs.get("loss", math.nan)),
            "accuracy": float(logs.get("accuracy", math.nan)),
            "val_loss": float(logs.get("val_loss", math.nan)),
            "val_accuracy": float(logs.get("val_accuracy", math.nan)),
            "learning_rate": float(np.asarray(self.model.optimizer.learning_rate)),
            "epoch_time_s": time.perf_counter() - self._started,
            "gpus": float(self.gpus),
            "node": self.node,
            "pid": os.getpid(),  # the worker process: what an operator (or a fault test) signals
        }
        rss = resident_mb()
        if rss is not None:  # the worker's memory, which the driver limits (--worker-memory-growth)
            metrics[RSS_KEY] = round(rss, 1)
        if self._cost is None:
            from trainables.cost import measure

            self._cost = measure(self.model)
        metrics.update(self._cost)
        # Diverged: end this trial with a recorded error; the search goes on. The weights are checked
        # too: Keras clips the cross-entropy, so a model whose weights overflowed can still report a
        # finite (if huge) loss.
        diverged = None
        if not math.isfinite(metrics["loss"]):
            diverged = f"non-finite training loss ({metrics['loss']}) at epoch {done}"
        elif not all(bool(keras.ops.all(keras.ops.isfinite(w))) for w in self.model.trainable_weights):
            diverged = f"non-finite weights after epoch {done} (training loss {metrics['loss']:.3g})"
        if diverged:
            metrics["error"] = diverged
            self.model.stop_training = True
            self.write_events(metrics, done)
            tune.report(metrics)
            return
        if done == self.config.max_epochs:
            test = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
            metrics["test_accuracy"] = float(test["accuracy"])
        self.write_events(metrics, done)
        if done % self.checkpoint_every and done != self.config.max_epochs:
            tune.report(metrics)  # no checkpoint this epoch: a restart resumes from the last one
            return
        with tempfile.TemporaryDirectory(prefix="ckpt-") as folder:  # Tune copies it to the storage
            self.model.save(Path(folder) / CHECKPOINT_MODEL)
            # The RNG streams are not saved: a restore reseeds from (seed, epoch), see trainable.epoch_seed.
            (Path(folder) / CHECKPOINT_STATE).write_text(json.dumps({"epoch": done, "seed": self.config.seed}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def write_events(self, metrics: dict[str, Any], epoch: int) -> None:
        if self.events is not None:
            self.events.write(metrics, step=epoch)  # step: Tune's training_iteration, one report per epoch
