"""Transfer learning: a keras.applications backbone (no top, global average pooling) + the reference study's dense head.

`extract` freezes the backbone and trains the head only. `finetune` trains the
backbone's convolution kernels too, but its BatchNorm layers stay in inference mode:
they keep normalising with their (pretrained) moving statistics and never update
them from small fine-tuning batches (the Keras transfer-learning guide's advice).
The guide does this by calling the backbone with `training=False`; Keras 3.15's
functional models override that with the outer `training=True` during fit, so the
BatchNorm layers are frozen (`trainable = False`, which Keras defines as inference
mode for BatchNormalization, and which survives saving and loading) as well.

`weights` is `imagenet` (downloaded once per node into Keras' cache), `none` (random
init) or the path of a weights file: the backbone's own (e.g. Keras'
`*_notop.h5`) or the full model's (`.weights.h5` saved from this architecture).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

from trainables.config import TrialConfig
from trainables.registry import Model

# config.model -> (keras.applications module, constructor); filled by each backbone's registry entry.
BACKBONES: dict[str, tuple[str, str]] = {}
TRANSFER_KNOBS = ("transfer_mode", "head_units", "dropout", "input_size", "weights")
WEIGHTS_HELP = "use --weights none (random init) or --weights PATH (a weights file copied from a machine with internet)"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # .h5 / .weights.h5
_ZIP_MAGIC = b"PK"  # .keras archives


class WeightsUnavailable(Exception):
    """The backbone's weights cannot be obtained; the message names the file or the fix (exit 2)."""


class WeightsDownloadFailed(WeightsUnavailable, ConnectionError):
    """The ImageNet weights could not be downloaded: an OSError, so a trial that meets it is retried
    (trainables.failures: a network may come back) where a bad weights file ends the trial once."""


def check_weights(weights: str) -> None:
    """Driver-side check of `--weights` before any trial starts; never imports TensorFlow.

    `imagenet` passes (only a trial on its node can tell whether the download works);
    a PATH must be a readable HDF5 or .keras file.
    """
    if weights in ("imagenet", "none"):
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"--weights {weights}: no such file; {WEIGHTS_HELP}, or --weights imagenet")
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise WeightsUnavailable(f"--weights {weights}: cannot read the file ({e.strerror})") from None
    if not (head.startswith(_HDF5_MAGIC) or head.startswith(_ZIP_MAGIC)):
        raise WeightsUnavailable(f"--weights {weights}: not a Keras weights file (HDF5 .h5 or .keras)")


def backbone_entry(name: str, module: str, constructor: str, min_input_size: int, description: str) -> Model:
    """The registry entry of a keras.applications backbone with the study's dense head (trainables/models/)."""
    BACKBONES[name] = (module, constructor)

    def check(config: TrialConfig) -> None:
        if config.input_size < min_input_size:
            raise ValueError(f"{name} needs input_size >= {min_input_size}, got {config.input_size}")

    return Model(
        name,
        build=lambda config, _input_shape, num_classes: transfer_model(config, num_classes),
        knobs=TRANSFER_KNOBS,
        input_shape=lambda config, _image_shape: (config.input_size,) * 2 + (3,),
        preprocess=input_transform,
        check=check,
        min_input_size=min_input_size,
        channels=(3,),  # ImageNet backbones take RGB; the input transform resizes but keeps the channels
        description=description,
    )


def backbone_module(model: str) -> ModuleType:
    import keras

    if model not in BACKBONES:
        raise ValueError(f"no transfer backbone {model!r}; known: {sorted(BACKBONES)}")
    return getattr(keras.applications, BACKBONES[model][0])


def build_backbone(config: TrialConfig, weights: str | None = None):  # noqa: ANN201 - keras.Model
    """The backbone without top, pooled to a vector; `weights` as keras.applications takes them."""
    constructor = getattr(backbone_module(config.model), BACKBONES[config.model][1])
    return constructor(
        include_top=False, weights=weights, pooling="avg", input_shape=(config.input_size, config.input_size, 3)
    )


def transfer_model(config: TrialConfig, num_classes: int):  # noqa: ANN201 - keras.Model
    """Backbone -> Dense(head_units, relu) [-> Dropout] -> Dense(num_classes, softmax)."""
    import keras
    from keras import layers

    check_weights(config.weights)
    full_model_weights = None
    if config.weights == "none":
        backbone = build_backbone(config, None)
    elif config.weights == "imagenet":
        try:
            backbone = build_backbone(config, "imagenet")
        except Exception as e:  # noqa: BLE001 - a failed download surfaces as many exception types
            raise WeightsDownloadFailed(
                f"ImageNet weights for {config.model} could not be downloaded ({type(e).__name__}: {e}); {WEIGHTS_HELP}"
            ) from None
    else:
        try:
            # A full model's file fails here after ~100 "Skipping nested container" warnings; they
            # say nothing the fallback below does not.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                backbone = build_backbone(config, config.weights)
        except Exception as backbone_error:  # noqa: BLE001 - not backbone weights: try the full model
            backbone = build_backbone(config, None)
            full_model_weights = (config.weights, backbone_error)

    inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
    features = backbone(inputs, training=False)  # see the module docstring: not enough on its own
    x = layers.Dense(config.head_units, activation="relu", name="head")(features)
    if config.dropout > 0:
        x = layers.Dropout(config.dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classes")(x)
    model = keras.Model(inputs, outputs, name=f"{config.model}_{config.transfer_mode}")

    if full_model_weights is not None:
        path, first_error = full_model_weights
        try:
            model.load_weights(path)
        except Exception as e:  # noqa: BLE001 - report both attempts
            raise WeightsUnavailable(
                f"--weights {path}: holds neither {config.model} backbone weights ({first_error}) nor "
                f"weights of this model with a {config.head_units}-unit head and {num_classes} classes "
                f"({e})"
            ) from None
    backbone.trainable = config.transfer_mode == "finetune"
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False  # inference mode: moving statistics used, never updated
    return model


def input_transform(config: TrialConfig):  # noqa: ANN201 - BatchFn
    """uint8 batch -> float32 at (input_size, input_size), then the backbone's own preprocess_input."""
    import tensorflow as tf

    preprocess = backbone_module(config.model).preprocess_input
    size = config.input_size

    def prepare(images: tf.Tensor) -> tf.Tensor:
        x = tf.cast(images, tf.float32)
        if x.shape[1] != size or x.shape[2] != size:  # static shapes: decided once, when traced
            x = tf.image.resize(x, (size, size))
        return preprocess(x)

    prepare.__name__ = f"{config.model}_input"
    return prepare
