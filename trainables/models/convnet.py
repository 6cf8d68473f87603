"""The reference ConvNet, generalised: `depth` 'valid' conv blocks of base_width * 2**i filters,
BatchNorm none / before / after the ReLU, a 2x2 max-pool after the blocks in `pool_after`, dense
`dense_units`. Its default is the study's improved network: BN after every ReLU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.config import min_image_size
from trainables.registry import Model, register_model

if TYPE_CHECKING:
    import keras

    from trainables.config import TrialConfig


def build(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import keras
    from keras import layers

    from trainables.config import conv_feature_sizes
    from trainables.models._layers import conv_block

    sizes = conv_feature_sizes(config, input_shape[0])
    if min(sizes) < 1:
        raise ValueError(
            f"ConvNet with depth={config.depth}, kernel_size={config.kernel_size}, "
            f"pool_after={config.pool_after!r} shrinks a {input_shape[0]}px image to "
            f"{min(sizes)}px; use fewer blocks, a smaller kernel or fewer pools"
        )
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


MODEL = register_model(
    Model(
        "convnet",
        build=build,
        knobs=("bn_position", "depth", "base_width", "kernel_size", "pool_after", "dense_units"),
        defaults={"bn_position": "after_relu"},
        min_input_size=min_image_size,
        description="the reference ConvNet (3x3 convs 16..256, BN after ReLU)",
    )
)
