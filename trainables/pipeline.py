"""tf.data input pipelines over shared arrays.

The pipeline shuffles and batches *indices* and gathers each batch from the shared array inside
TensorFlow (`tf.gather`, in tf.data's own threads, no Python call per batch), so a trial never copies
the dataset: the array the object store (or the node's whitened cache) maps into the process is handed
to TensorFlow as it is (`shared_tensor`), and memory per extra trial stays at a few batches, not the
dataset's size. Augmentation and the uint8 -> float32 cast run on whole batches (one op per batch,
not per image).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np
import tensorflow as tf

BatchFn = Callable[[tf.Tensor], tf.Tensor]  # uint8 (B, H, W, C) -> float32 (B, H', W', C)
GatherFn = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # int64 (B,) indices -> (images, int32 labels)

# Byte alignment a buffer needs for TensorFlow's kernels to read it in place (Eigen's widest packet:
# 64 with AVX-512). Ray's object store and .npy files (header padded to 64) give it; anything else is
# copied.
SHARED_ALIGNMENT = 64


def to_unit_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]: the `simple` policy's only op."""
    return tf.cast(images, tf.float32) / 255.0


def shared_tensor(x: np.ndarray) -> tf.Tensor:
    """A TensorFlow tensor over `x`'s own memory, without a copy.

    `tf.constant(x)` and `tf.convert_to_tensor(x)` copy every array (measured: a 192 MB array added
    397 MB of private memory, TensorFlow 2.21), so a trial converting the dataset would hold its own
    copy. DLPack hands TensorFlow the buffer itself; its version TensorFlow reads (0.x) cannot say
    "read-only", and NumPy refuses to export a read-only array (what Ray's object store and a
    mode="r" memmap give) through it, so the DLPack export is of a writeable view of the same bytes,
    which holds a reference to `x`. Nothing writes through it: TensorFlow never writes into a tensor it
    did not allocate (gather reads it). A misaligned or non-contiguous array (never one from the object
    store) is copied."""
    if not x.flags.c_contiguous or x.nbytes == 0 or x.ctypes.data % SHARED_ALIGNMENT:
        return tf.constant(np.ascontiguousarray(x))
    raw = (ctypes.c_char * x.nbytes).from_address(x.ctypes.data)
    raw._owner = x  # type: ignore[attr-defined]  # the bytes stay mapped while TensorFlow holds the view
    view = np.frombuffer(memoryview(raw).cast("B"), dtype=x.dtype).reshape(x.shape)
    return tf.experimental.dlpack.from_dlpack(view.__dlpack__())


def gather_from(x: np.ndarray, y: np.ndarray) -> GatherFn:
    """The batch gather: indices -> (x[indices], y[indices] as int32), as TensorFlow ops over `x` shared
    in place; the labels are copied (4 bytes an image: 180 KB for CIFAR-100's 25 classes)."""
    images = shared_tensor(x)
    labels = tf.constant(np.asarray(y, dtype=np.int32))

    def gather(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(images, idx), tf.gather(labels, idx)

    return gather


def without_rewrites(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's default graph rewrites off. A rewrite serialises the pipeline's graph with
    every tensor its functions capture as a constant, i.e. copies the shared array once per pipeline
    (measured: +203 MB private memory for a 192 MB array, against +4 MB without rewrites). Autotuning
    (parallelism, prefetch buffers) is no rewrite and stays on; the maps are parallel by themselves."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return ds.with_options(options)


def gather_batches(
    x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """Batches of (images, int32 labels) for `indices` of `x` (uint8 images, or float32 ones a policy
    precomputed), shuffled each epoch if seeded."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(indices), seed=shuffle_seed, reshuffle_each_iteration=True)
    # The options reach every dataset built on this one (tf.data merges its inputs' options).
    return without_rewrites(ds.batch(batch_size).map(gather_from(x, y), num_parallel_calls=tf.data.AUTOTUNE))


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
