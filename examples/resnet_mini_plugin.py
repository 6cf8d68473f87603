"""An example plugin: your own network and search space, without editing the package. Copy this file.

    python run_search.py --plugin examples/resnet_mini_plugin.py --space resnet_mini --dataset digits

It registers a model (a small residual CNN), and a space with two knobs of its own (`res_blocks`,
`width_multiplier`) that compares it with the reference BaseNet. The knobs are validated like the
built-in ones and become typed columns of trials.parquet, null in BaseNet's rows, which do not read them.

Rules a plugin follows:
- Register with the same calls the built-in entries use: `register_model` (trainables.registry),
  `register_space` (search_spaces); `register_dataset` for a dataset of your own.
- Keep TensorFlow/Keras imports inside the builder: the driver reads the declarations without loading
  TensorFlow, and so do search spaces.
- The file name is the module name trials import it as (here `resnet_mini_plugin`): make it unique.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces import SearchSpace, register_space
from trainables.registry import Knob, Model, register_model

NAME = "resnet_mini"


def build(config: Any, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """A stem conv, `res_blocks` residual blocks (two 3x3 convs + BN each, the width doubling and the map
    halving from the second block on), global average pooling, softmax. Widths scale with
    `width_multiplier` (16 filters at 1.0)."""
    import keras
    from keras import layers

    width = max(4, round(16 * config.width_multiplier))
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for block in range(config.res_blocks):
        filters, stride = width * 2 ** min(block, 2), 1 if block == 0 else 2
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        if stride != 1 or shortcut.shape[-1] != filters:  # project the shortcut to the block's shape
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name=NAME)


register_model(Model(NAME, build=build, description="small residual CNN (example plugin)"))

KNOBS = (
    Knob("res_blocks", "int", 2, models=(NAME,), low=1, high=4, doc="residual blocks after the stem"),
    Knob(
        "width_multiplier",
        "float",
        1.0,
        models=(NAME,),
        low=0.25,
        high=4.0,
        doc="scales every conv's filters (16 at 1.0)",
    ),
)


def define(trial: optuna.Trial) -> dict[str, Any]:
    if trial.suggest_categorical("model", [NAME, "basenet"]) == NAME:
        trial.suggest_int("res_blocks", 1, 3)
        trial.suggest_float("width_multiplier", 0.5, 1.5)
    trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
    return {"optimizer": "adam"}


register_space(
    SearchSpace(
        name=NAME,
        description="example plugin: a small residual CNN (blocks x width) against the reference BaseNet",
        define=define,
        dataset="digits",
        num_samples=8,
        max_epochs=3,
        knobs=KNOBS,
        grid=[
            {"model": NAME, "res_blocks": 1, "width_multiplier": 0.5, "optimizer": "adam", "learning_rate": 0.01},
            {"model": "basenet", "optimizer": "adam", "learning_rate": 0.01},
        ],
    )
)
