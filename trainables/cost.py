"""What a trained model costs: its size, its multiply-accumulates per image, and its inference time.

Multiply-accumulates (MACs) per image, at inference, counted layer by layer from the built model
(nested models such as a transfer backbone are walked too):

- Conv1D/2D/3D: one MAC per output element per kernel tap and input channel of its group
  (output elements x kernel height x kernel width x input channels / groups). Bias adds are not counted.
- DepthwiseConv2D: output elements x kernel taps. SeparableConv2D: its depthwise part plus its 1x1
  pointwise part.
- Dense: output elements x input units (a Dense on a sequence counts once per position).
- BatchNormalization, LayerNormalization, Normalization: one MAC per output element (at inference a
  BatchNorm is a per-channel scale and shift, x * a + b).
- AveragePooling: output elements x pool window; GlobalAveragePooling: one per input element (each is
  accumulated with weight 1/n).
- Not counted (no multiplications, or one per element that any runtime fuses): max-pooling,
  activations (ReLU, softmax), Add/Multiply/Concatenate, Flatten, Dropout, padding, reshapes, rescaling.

A layer that holds weights and is not listed (e.g. a plugin's attention layer) makes the count
unknown (`UncountedLayer`) rather than silently low.

Inference time: `predict_on_batch` on zeros of the model's input shape (input preprocessing and
augmentation excluded), after one warm-up call that traces the predict function for that batch shape;
the fastest of a few timed calls, divided by the batch size (the fastest call is the one least
disturbed by other processes on the machine, as `timeit` reasons).
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np

# Images per call for the throughput figure, halved while the device runs out of memory. A CPU's
# throughput stops growing at a few dozen images, and 256 ConvNet images cost seconds per call there.
LARGE_BATCH_GPU = 256
LARGE_BATCH_CPU = 32
MIN_REPEATS = 2  # timed calls per batch size, at least ...
MAX_REPEATS = 20  # ... and at most,
TIME_BUDGET_S = 1.0  # stopping once this many seconds (per batch size) are spent past MIN_REPEATS


class UncountedLayer(Exception):
    """The model has a layer with weights whose MACs this module does not know how to count."""


def param_count(model: keras.Model) -> int:
    """Every weight of the model, trainable or not (BatchNorm's moving statistics included)."""
    return int(model.count_params())


def _elements(shape: Any) -> int:
    return math.prod(int(d) for d in tuple(shape)[1:])  # per image: drop the batch dimension


def _layers(model: keras.Model):  # noqa: ANN202 - yields keras layers
    for layer in model.layers:
        if isinstance(layer, keras.Model) or (hasattr(layer, "layers") and layer.layers):
            yield from _layers(layer)  # a nested model (transfer backbone) or a Sequential block
        else:
            yield layer


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs per image of one built layer (see the module docstring for what counts)."""
    L = keras.layers
    if isinstance(layer, L.SeparableConv2D | L.SeparableConv1D):
        out = _elements(layer.output.shape)
        depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
        positions = out // int(pointwise[-1])
        return positions * int(depthwise[-2]) * int(depthwise[-1]) * (math.prod(depthwise[:-2]) + int(pointwise[-1]))
    if isinstance(layer, L.DepthwiseConv2D | L.DepthwiseConv1D):
        return _elements(layer.output.shape) * math.prod(int(d) for d in layer.kernel.shape[:-2])
    if isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D) and not isinstance(
        layer, L.Conv1DTranspose | L.Conv2DTranspose | L.Conv3DTranspose
    ):
        # kernel: (*taps, in_channels / groups, filters); each output element sums over all but the last.
        return _elements(layer.output.shape) * math.prod(int(d) for d in layer.kernel.shape[:-1])
    if isinstance(layer, L.Dense):
        return _elements(layer.output.shape) * int(layer.kernel.shape[0])
    if isinstance(layer, L.BatchNormalization | L.LayerNormalization | L.Normalization):
        return _elements(layer.output.shape)
    if isinstance(layer, L.AveragePooling1D | L.AveragePooling2D | L.AveragePooling3D):
        return _elements(layer.output.shape) * math.prod(layer.pool_size)
    if isinstance(layer, L.GlobalAveragePooling1D | L.GlobalAveragePooling2D | L.GlobalAveragePooling3D):
        return _elements(layer.input.shape)
    if layer.weights:
        raise UncountedLayer(f"layer {layer.name!r} ({type(layer).__name__}) has weights but no MAC rule")
    return 0


def macs_per_image(model: keras.Model) -> int:
    """Multiply-accumulates to classify one image (module docstring: what counts)."""
    return sum(layer_macs(layer) for layer in _layers(model))


def seconds_per_image(model: keras.Model, batch: int) -> float:
    """Inference seconds per image at `batch` images per call (module docstring: how it is timed)."""
    x = np.zeros((batch, *model.input_shape[1:]), dtype="float32")
    model.predict_on_batch(x)  # warm-up: traces and compiles for this batch shape
    times: list[float] = []
    spent = time.perf_counter()
    while len(times) < MAX_REPEATS and (len(times) < MIN_REPEATS or time.perf_counter() - spent < TIME_BUDGET_S):
        started = time.perf_counter()
        model.predict_on_batch(x)  # returns NumPy: the device has finished
        times.append(time.perf_counter() - started)
    return min(times) / batch


def inference_device() -> str:
    """Where predict runs: the first visible GPU's name, else the CPU's model name."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return f"CPU: {name}" if name else "CPU"


def measure(model: keras.Model, large_batch: int | None = None) -> dict[str, Any]:
    """The cost fields of a trial's report (trials.parquet columns of the same names)."""
    import tensorflow as tf

    if large_batch is None:
        large_batch = LARGE_BATCH_GPU if tf.config.list_physical_devices("GPU") else LARGE_BATCH_CPU

    try:
        macs: int | None = macs_per_image(model)
    except UncountedLayer:
        macs = None  # unknown, not zero: left out of the report, so the column stays null
    cost: dict[str, Any] = {
        "param_count": param_count(model),
        "inference_s_per_image_b1": seconds_per_image(model, 1),
        "inference_device": inference_device(),
    }
    if macs is not None:
        cost["macs_per_image"] = macs
    batch = large_batch
    while batch >= 2:
        try:
            cost["inference_s_per_image_large"] = seconds_per_image(model, batch)
            cost["inference_large_batch"] = batch
            break
        except tf.errors.ResourceExhaustedError:  # a fractional GPU share: try a batch that fits
            batch //= 2
    return cost
