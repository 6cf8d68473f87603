"""The reference BaseNet: conv5x5(6)-relu-pool, conv5x5(16)-relu-pool, dense(50)-relu, softmax; with
`bn_position` a BatchNorm after each conv, before or after its ReLU (the study's BaseNet-BatchBefore and
BaseNetBatchAfter). Its default is the reference BaseNet, without BatchNorm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import Model, register_model

if TYPE_CHECKING:
    import keras

    from trainables.config import TrialConfig


def build(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import keras
    from keras import layers

    from trainables.models._layers import conv_block

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


MODEL = register_model(
    Model(
        "basenet",
        build=build,
        knobs=("bn_position",),
        defaults={"bn_position": "none"},
        # Two 5x5 'valid' convs, each followed by a 2x2 pool: 16 -> 12 -> 6 -> 2 -> 1 pixels.
        min_input_size=16,
        description="the reference BaseNet (two 5x5 convs, dense 50)",
    )
)
