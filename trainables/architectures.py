"""Architectures as pure functions of the config: same config, same graph, no hidden state."""

from __future__ import annotations

import keras
from keras import layers

from trainables.config import TrialConfig, conv_feature_sizes


def build_model(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    if config.model == "basenet":
        return basenet(config, input_shape, num_classes)
    if config.model == "convnet":
        return convnet(config, input_shape, num_classes)
    from trainables.transfer import transfer_model  # keras.applications is heavy; load on demand

    return transfer_model(config, num_classes)


def conv_block(filters: int, kernel_size: int, bn_position: str, block: int) -> list[layers.Layer]:
    """A 'valid' conv, its ReLU, and a BatchNorm before or after that ReLU (or none)."""
    # Bias is redundant right before a BatchNorm, which has its own shift.
    conv = layers.Conv2D(filters, kernel_size, padding="valid", use_bias=bn_position != "before_relu",
                         name=f"conv{block}")
    relu = layers.ReLU(name=f"relu{block}")
    if bn_position == "before_relu":
        return [conv, layers.BatchNormalization(name=f"bn{block}"), relu]
    if bn_position == "after_relu":
        return [conv, relu, layers.BatchNormalization(name=f"bn{block}")]
    return [conv, relu]


def basenet(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The reference BaseNet: conv5x5(6)-relu-pool, conv5x5(16)-relu-pool, dense(50)-relu, softmax; with
    `bn_position` a BatchNorm after each conv, before or after its ReLU (the study's BaseNet-BatchBefore
    and BaseNetBatchAfter)."""
    stack: list[layers.Layer] = [keras.Input(shape=input_shape)]
    for block, filters in enumerate((6, 16), start=1):
        stack += conv_block(filters, 5, config.bn_position, block)
        stack.append(layers.MaxPooling2D(2, name=f"pool{block}"))
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dense(50, activation="relu", name="dense"),
        layers.Dense(num_classes, activation="softmax", name="classes"),
    ]
    return keras.Sequential(stack, name="basenet")


def convnet(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The reference ConvNet, generalised: `depth` 'valid' conv blocks of base_width * 2**i filters,
    BatchNorm none / before / after the ReLU, a 2x2 max-pool after the blocks in `pool_after`."""
    sizes = conv_feature_sizes(config, input_shape[0])
    if min(sizes) < 1:
        raise ValueError(f"ConvNet with depth={config.depth}, kernel_size={config.kernel_size}, "
                         f"pool_after={config.pool_after!r} shrinks a {input_shape[0]}px image to "
                         f"{min(sizes)}px; use fewer blocks, a smaller kernel or fewer pools")
    stack: list[layers.Layer] = [keras.Input(shape=input_shape)]
    for i in range(config.depth):
        block = i + 1
        stack += conv_block(config.base_width * 2**i, config.kernel_size, config.bn_position, block)
        if block in config.pools:
            stack.append(layers.MaxPooling2D(2, name=f"pool{block}"))
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dense(config.dense_units, activation="relu", name="dense"),
        layers.Dense(num_classes, activation="softmax", name="classes"),
    ]
    return keras.Sequential(stack, name="convnet")


def build_optimizer(config: TrialConfig) -> keras.optimizers.Optimizer:
    decay = config.weight_decay or None  # keras treats 0.0 and None alike; None skips the op
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum,
                                    nesterov=config.nesterov, weight_decay=decay)
    return keras.optimizers.Adam(learning_rate=config.learning_rate, weight_decay=decay)
