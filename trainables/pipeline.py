"""tf.data input pipelines over shared uint8 arrays.

The pipeline shuffles and batches *indices* and gathers each batch from the
shared array, so a trial never copies the dataset into TensorFlow: memory per
extra trial stays at a few batches, not the dataset's size. Augmentation and
the uint8 -> float32 cast run on whole batches (one op per batch, not per image).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

BatchFn = Callable[[tf.Tensor], tf.Tensor]  # uint8 (B, H, W, C) -> float32 (B, H', W', C)


def to_unit_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]: the `simple` policy's only op."""
    return tf.cast(images, tf.float32) / 255.0


def gather_batches(
    x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Batches of (images, int32 labels) for `indices` of `x` (uint8 images, or float32 ones a policy
    precomputed), shuffled each epoch if seeded."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(indices), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def gather(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[idx], y[idx].astype(np.int32)

    def gather_op(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(gather, [idx], (tf.as_dtype(x.dtype), tf.int32), stateful=False)
        images.set_shape((None, *x.shape[1:]))
        labels.set_shape((None,))
        return images, labels

    return ds.map(gather_op, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray,
    batch_size: int,
    transform: BatchFn = to_unit_float,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """The full pipeline: gather -> batched transform (augmentation for training) -> prefetch.

    A random transform (`transform.seeded`, see trainables.augment.compose) gets a (2,) seed per
    batch from a stream seeded by `shuffle_seed` and drawn anew each epoch, so augmentation is a
    function of the seed alone, not of which tf.data thread ran the batch."""
    ds = gather_batches(x, y, indices, batch_size, shuffle_seed)
    if getattr(transform, "seeded", False):
        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, seed: (transform(batch[0], seed), batch[1]),  # type: ignore[call-arg]
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(lambda images, labels: (transform(images), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
