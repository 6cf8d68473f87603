"""A multilayer perceptron baseline: flatten, one hidden dense layer of `dense_units` (ReLU), softmax.

What any CNN here should beat: it sees pixels without any notion of locality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import Model, register_model

if TYPE_CHECKING:
    import keras

    from trainables.config import TrialConfig


def build(config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Flatten(name="flatten"),
            layers.Dense(config.dense_units, activation="relu", name="dense"),
            layers.Dense(num_classes, activation="softmax", name="classes"),
        ],
        name="mlp",
    )


MODEL = register_model(Model("mlp", build=build, knobs=("dense_units",), description="MLP baseline (one hidden layer)"))
