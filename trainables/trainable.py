"""What one trial does: data -> model -> fit, reporting once per epoch to Ray Tune.

The trainable only reports (Syne Tune's rule); tables are built from what it
reported. Every `checkpoint_every`-th report (and the last) carries a checkpoint
(model with optimizer state and the epoch), so a retried or resumed trial
continues from its last checkpoint and loses at most `checkpoint_every` - 1
reported epochs (they are trained and reported again).

Ray Tune may run this function in a worker process that already ran other trials
(`reuse_actors`): TensorFlow's process settings are made once
(runtime.configure_tensorflow) and Keras' state is cleared first thing
(runtime.reset_trial_state), so a trial's metrics do not depend on what ran
before it in the process (tests/trainables/test_trainable.py).

Random state on a restore: the checkpoint holds weights and optimizer state, not
the RNG streams. A trial resumed at epoch k reseeds Python, NumPy and TensorFlow
from `epoch_seed(seed, k)` and shuffles from it too, so a resumed trial is
deterministic given where it resumed, though not bit-identical to an
uninterrupted run.

Failures: a NaN/inf loss (callbacks.EpochReporter) and an out-of-memory error
(tf.errors.ResourceExhaustedError, MemoryError) end the trial with an `error`
field in its last report and no retry (the same config would fail again); any
other exception fails the attempt and Ray Tune retries it from the last
checkpoint (--max-failures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import TrialConfig
from trainables.data import ImageDataset, validation_split


def train_trial(
    params: dict[str, Any],
    data: ImageDataset,
    cpus: float = 1,
    gpus: float = 0,
    checkpoint_every: int = 1,
    plugins: tuple[str, ...] = (),
    shipped: bool = False,
) -> None:
    """The Ray Tune function trainable. `data` arrives through the object store (zero-copy);
    `checkpoint_every` is the checkpoint period in epochs (run_search --checkpoint-every). `plugins`:
    the driver's --plugin list, loaded here so their models and knobs are registered in this worker too
    (`shipped`: from Ray's runtime env, by module name; see trainables.plugins)."""
    from trainables.plugins import load_plugins
    from trainables.runtime import allow_slow_trial_exit, configure_tensorflow, reset_trial_state

    allow_slow_trial_exit()
    load_plugins(plugins, shipped)
    configure_tensorflow(cpus, gpus)  # before any TensorFlow op in this process; once per process
    reset_trial_state()  # nothing of an earlier trial in this (reused) worker reaches this one

    import keras
    from ray import tune

    config = TrialConfig.from_params(params)
    keras.utils.set_random_seed(config.seed)
    import tensorflow as tf

    from trainables import registry
    from trainables.callbacks import EpochReporter

    try:
        model, start_epoch = _restore(tune.get_checkpoint())
        if model is None:
            model = _compile(config, data)
        else:
            set_perturbable(model.optimizer, config, steps_per_epoch(config, data))
        if start_epoch >= config.max_epochs:
            return
        if start_epoch:
            keras.utils.set_random_seed(epoch_seed(config.seed, start_epoch))
        train_ds, val_ds, test_ds = _datasets(config, data, shuffle_seed=epoch_seed(config.seed, start_epoch))

        reporter = EpochReporter(config, test_ds, gpus, checkpoint_every)
        # A plugin's callbacks (registry.TrialCallback) after the reporter: its epoch hooks see the epoch reported.
        callbacks: list[keras.callbacks.Callback] = [reporter, *registry.trial_callbacks(config)]
        if config.patience:
            callbacks.insert(0, keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience))
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.max_epochs,
            initial_epoch=start_epoch,
            callbacks=callbacks,
            verbose=0,
        )
    except (tf.errors.ResourceExhaustedError, MemoryError) as e:
        # Recorded, not retried: the same config would exhaust memory again. No `epoch` key, so the
        # epochs table and ASHA ignore this row; val_accuracy is present because Tune requires the metric.
        message = (getattr(e, "message", None) or str(e) or type(e).__name__).strip().splitlines()[0]
        tune.report({"val_accuracy": float("nan"), "error": f"out of memory ({type(e).__name__}): {message}"})


def set_perturbable(optimizer, config: TrialConfig, steps: int) -> None:  # noqa: ANN001 - keras optimizer
    """The config's perturbable knobs (trainables.config.PERTURBABLE_KNOBS) over what a checkpoint restored.

    Population-based training restarts a trial from another trial's checkpoint with that trial's config
    perturbed; the checkpoint's optimizer holds the old values, so the new ones are set here, before fit
    traces its step. The optimizer's state (momentum slots, the step count a schedule follows) is kept.
    A plain retry restores its own values: setting them again changes nothing."""
    from trainables.schedules import learning_rate

    # A float is assigned to the optimizer's learning-rate variable; a schedule (the config's lr_schedule,
    # which PBT never changes) replaces the restored one: the same shape over the same steps, a new base rate.
    optimizer.learning_rate = learning_rate(config, steps)
    if config.optimizer == "sgd":
        optimizer.momentum = config.momentum
    optimizer.weight_decay = config.weight_decay or None  # as build_optimizer: 0 means none


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed a trial (re)starting at `epoch` uses: `seed` itself at epoch 0, then a stride (a prime)
    far from the small consecutive seeds repeats use, kept within NumPy's 32-bit seed range."""
    return (seed + 1_000_003 * epoch) % 2**32


def _compile(config: TrialConfig, data: ImageDataset):  # noqa: ANN202 - keras.Model
    from trainables.architectures import build_model, build_optimizer, input_shape
    from trainables.losses import build_loss

    model = build_model(config, input_shape(config, data.image_shape), data.num_classes)
    optimizer = build_optimizer(config, steps_per_epoch(config, data))
    model.compile(optimizer=optimizer, loss=build_loss(config), metrics=["accuracy"])
    return model


def steps_per_epoch(config: TrialConfig, data: ImageDataset) -> int:
    """Optimizer steps per epoch: batches of the training part of the trial's validation split
    (the last one may be partial), what a learning-rate schedule counts its budget in."""
    train_idx, _ = validation_split(data.y_train, config.seed)
    return -(-len(train_idx) // config.batch_size)


def _datasets(config: TrialConfig, data: ImageDataset, shuffle_seed: int):  # noqa: ANN202
    from trainables.augment import policy_inputs
    from trainables.pipeline import make_dataset

    train_idx, val_idx = validation_split(data.y_train, config.seed)
    inputs = policy_inputs(config, data, train_idx)  # whitening: the dataset whitened once, cached
    x_train, train_tf, eval_tf = inputs.x_train, inputs.train_transform, inputs.eval_transform
    train = make_dataset(x_train, data.y_train, train_idx, config.batch_size, train_tf, shuffle_seed)
    val = make_dataset(x_train, data.y_train, val_idx, config.batch_size, eval_tf)
    test = make_dataset(inputs.x_test, data.y_test, np.arange(len(data.y_test)), config.batch_size, eval_tf)
    return train, val, test


def _restore(checkpoint):  # noqa: ANN001, ANN202 - tune.Checkpoint | None -> (keras.Model | None, int)
    if checkpoint is None:
        return None, 0
    import keras

    # Imported for what they register with Keras (the label-smoothing loss, the learning-rate schedule):
    # a fresh worker restoring a checkpoint has built no model yet, and load_model finds only classes
    # already registered.
    import trainables.losses
    import trainables.schedules  # noqa: F401
    from trainables.callbacks import CHECKPOINT_MODEL, CHECKPOINT_STATE

    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / CHECKPOINT_STATE).read_text())
        model = keras.models.load_model(Path(folder) / CHECKPOINT_MODEL)
    return model, int(state["epoch"])
