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

Failures: a NaN/inf loss (callbacks.EpochReporter), an out-of-memory error
(tf.errors.ResourceExhaustedError, MemoryError), a bad config, a model that
cannot be built and a validation split that cannot be made
(trainables.failures.CannotHeal) end the trial with an `error` field in its last
report and no retry (the same config would fail again); any other exception, and
a worker that dies, fails the attempt and Ray Tune retries it from the last
checkpoint (--max-failures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import TrialConfig
from trainables.data import ImageDataset, validation_split
from trainables.failures import CannotHeal, cannot_heal, first_line


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

    import tensorflow as tf
    from ray import tune

    try:
        _train(params, data, gpus, checkpoint_every)
    except (tf.errors.ResourceExhaustedError, MemoryError) as e:
        # Recorded, not retried: the same config would exhaust memory again. No `epoch` key, so the
        # epochs table and ASHA ignore this row; val_accuracy is present because Tune requires the metric.
        tune.report({"val_accuracy": float("nan"), "error": f"out of memory ({type(e).__name__}): {first_line(e)}"})
    except CannotHeal as e:  # a bad config, a model that cannot be built, a split that cannot be made
        tune.report({"val_accuracy": float("nan"), "error": str(e)})  # recorded as the one above


def _train(params: dict[str, Any], data: ImageDataset, gpus: float, checkpoint_every: int) -> None:
    """The trial itself; a failure that retrying cannot heal raises CannotHeal (trainables.failures)."""
    import keras
    from ray import tune

    from trainables import registry
    from trainables.callbacks import EpochReporter
    from trainables.events import TrialEvents, working_folder

    # TypeError too: a knob of a type that no coercion takes (a plugin space's list, say).
    with cannot_heal("bad config", (ValueError, TypeError)):
        config = TrialConfig.from_params(params)
    keras.utils.set_random_seed(config.seed)
    model, start_epoch = _restore(tune.get_checkpoint())
    if start_epoch >= config.max_epochs:
        return
    if start_epoch:
        keras.utils.set_random_seed(epoch_seed(config.seed, start_epoch))
    with cannot_heal("the validation split cannot be made", (ValueError,)):
        split = validation_split(data.y_train, config.seed)
    if model is None:
        model = _compile(config, data, len(split[0]))
    else:
        set_perturbable(model.optimizer, config, steps_per_epoch(config, len(split[0])))
    train_ds, val_ds, test_ds = _datasets(config, data, split, shuffle_seed=epoch_seed(config.seed, start_epoch))

    # TensorBoard's events, in the trial's working folder (Tune copies it to the storage's trial folder).
    events = TrialEvents(params, working_folder())
    reporter = EpochReporter(config, test_ds, gpus, checkpoint_every, events)
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


def _compile(config: TrialConfig, data: ImageDataset, train_images: int):  # noqa: ANN202 - keras.Model
    """The trial's model, compiled; raises CannotHeal when it cannot be built."""
    import tensorflow as tf

    from trainables.architectures import build_model, build_optimizer, input_shape
    from trainables.losses import build_loss

    # A builder is a pure function of the config and the input shape (trainables.architectures), so what
    # it raises repeats on a retry (Keras' "Computed output size would be zero or negative" for images
    # too small), except I/O (a weights download, a file system) and TensorFlow's runtime errors (out of
    # memory: recorded as such by train_trial), which may not.
    with cannot_heal("the model cannot be built", (Exception,), unless=(OSError, tf.errors.OpError, MemoryError)):
        model = build_model(config, input_shape(config, data.image_shape), data.num_classes)
        optimizer = build_optimizer(config, steps_per_epoch(config, train_images))
        model.compile(optimizer=optimizer, loss=build_loss(config), metrics=["accuracy"])
    return model


def steps_per_epoch(config: TrialConfig, train_images: int) -> int:
    """Optimizer steps per epoch: batches of the `train_images` of the training part of the trial's
    validation split (the last one may be partial), what a learning-rate schedule counts its budget in."""
    return -(-train_images // config.batch_size)


def _datasets(config: TrialConfig, data: ImageDataset, split: tuple[np.ndarray, np.ndarray], shuffle_seed: int):  # noqa: ANN202
    from trainables.augment import policy_inputs
    from trainables.pipeline import make_dataset

    train_idx, val_idx = split
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
