"""Architectures as pure functions of the config: same config, same graph, no hidden state.

Each network is a registry entry (trainables/models/, or a plugin's); this module only looks it up.
"""

from __future__ import annotations

import keras

from trainables import registry
from trainables.config import TrialConfig


def build_model(config: TrialConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    return registry.model(config.model).build(config, input_shape, num_classes)


def input_shape(config: TrialConfig, image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """What the model is fed: its entry's input-size rule, else the dataset's images as they are."""
    rule = registry.model(config.model).input_shape
    return tuple(image_shape) if rule is None else rule(config, tuple(image_shape))


def build_optimizer(config: TrialConfig, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The config's optimizer; its learning rate follows `lr_schedule` over max_epochs epochs of
    `steps_per_epoch` optimizer steps (trainables.schedules; a constant rate ignores the count)."""
    from trainables.schedules import learning_rate

    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None  # keras treats 0.0 and None alike; None skips the op
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay
        )
    return keras.optimizers.Adam(learning_rate=lr, weight_decay=decay)
