"""The batch gather inside TensorFlow: the same batches as the NumPy gather it replaced, over the array's
own memory (no copy), eagerly and inside a pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from trainables import augment
from trainables.config import TrialConfig
from trainables.data import load_digits, validation_split
from trainables.pipeline import (
    SHARED_ALIGNMENT,
    BatchFn,
    gather_batches,
    gather_from,
    make_dataset,
    shared_tensor,
)


def aligned(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """A writeable array at a SHARED_ALIGNMENT-byte boundary, as Ray's object store places one; the test
    writes into it and a read-only view of it goes to the pipeline, as the object store's does."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + SHARED_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % SHARED_ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def read_only(x: np.ndarray) -> np.ndarray:
    view = x.view()
    view.flags.writeable = False
    return view


# --- today's gather before this change, the reference: a NumPy gather per batch through tf.numpy_function ---


def numpy_gather_batches(
    x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(indices), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[idx], y[idx].astype(np.int32)

    def gather_op(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(gather, [idx], (tf.as_dtype(x.dtype), tf.int32), stateful=False)
        images.set_shape((None, *x.shape[1:]))
        labels.set_shape((None,))
        return images, labels

    return ds.batch(batch_size).map(gather_op, num_parallel_calls=tf.data.AUTOTUNE)


def numpy_make_dataset(
    x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int, transform: BatchFn, shuffle_seed: int | None
) -> tf.data.Dataset:
    ds = numpy_gather_batches(x, y, indices, batch_size, shuffle_seed)
    if getattr(transform, "seeded", False):
        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip(ds, seeds).map(lambda batch, seed: (transform(batch[0], seed), batch[1]))  # type: ignore[call-arg]
    return ds.map(lambda images, labels: (transform(images), labels))


def epochs_of(ds: tf.data.Dataset, epochs: int = 2) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(images.numpy(), labels.numpy()) for images, labels in ds] for _ in range(epochs)]


def assert_same_epochs(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for got_epoch, expected_epoch in zip(got, expected, strict=True):
        assert len(got_epoch) == len(expected_epoch)
        for (images, labels), (images_ref, labels_ref) in zip(got_epoch, expected_epoch, strict=True):
            np.testing.assert_array_equal(labels, labels_ref)
            np.testing.assert_array_equal(images, images_ref)


# --- the gather op ---


def test_gather_op_is_the_numpy_gather_eagerly_and_in_a_pipeline():
    x = read_only(np.random.default_rng(0).integers(0, 256, (50, 4, 4, 3)).astype(np.uint8))
    y = np.arange(50, dtype=np.int64) % 7  # int64 labels come out int32, as the model's loss expects
    gather = gather_from(x, y)
    idx = np.array([3, 0, 49, 3, 17], np.int64)
    images, labels = gather(tf.constant(idx))  # eagerly
    np.testing.assert_array_equal(images.numpy(), x[idx])
    np.testing.assert_array_equal(labels.numpy(), y[idx])
    assert images.dtype == tf.uint8 and labels.dtype == tf.int32
    images, labels = next(iter(tf.data.Dataset.from_tensors(idx).map(gather)))  # inside a tf.data map
    np.testing.assert_array_equal(images.numpy(), x[idx])
    np.testing.assert_array_equal(labels.numpy(), y[idx])


@pytest.mark.parametrize("shuffle_seed", [None, 0, 5])
def test_gather_batches_are_the_numpy_gathers_batches_for_a_seed(shuffle_seed):
    x = read_only(np.random.default_rng(1).integers(0, 256, (203, 6, 6, 3)).astype(np.uint8))
    y = np.random.default_rng(2).integers(0, 10, 203).astype(np.int32)
    indices = np.random.default_rng(3).permutation(203)[:150]  # a split's indices, unsorted, last batch partial
    got = epochs_of(gather_batches(x, y, indices, 32, shuffle_seed))
    assert_same_epochs(got, epochs_of(numpy_gather_batches(x, y, indices, 32, shuffle_seed)))
    if shuffle_seed is not None:
        assert not np.array_equal(got[0][0][1], got[1][0][1])  # reshuffled each epoch


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.parametrize("policy", ["simple", "complex", "crop_flip", "whitening"])
def test_every_policys_pipeline_yields_the_batches_it_yielded_through_numpy(digits, tmp_path, policy):
    # The trial's own inputs and transforms (augment.policy_inputs: `whitening` gathers from the
    # whitened float32 memmap of the node cache) with the seed a trial shuffles and augments from.
    config = TrialConfig(model="basenet", dataset="digits", augmentation=policy, seed=3)
    train_idx, _ = validation_split(digits.y_train, config.seed)
    train_idx = train_idx[:300]
    inputs = augment.policy_inputs(config, digits, train_idx, cache_dir=tmp_path)
    for transform, seed in ((inputs.train_transform, config.seed), (inputs.eval_transform, None)):
        got = epochs_of(make_dataset(inputs.x_train, digits.y_train, train_idx, 64, transform, seed))
        expected = epochs_of(numpy_make_dataset(inputs.x_train, digits.y_train, train_idx, 64, transform, seed))
        assert_same_epochs(got, expected)


# --- no copy of the dataset ---


def test_shared_tensor_reads_the_arrays_own_memory():
    # Written after the tensor was made, the source's new pixels are what the tensor holds: it is the
    # array's own memory, not a copy, read-only views (the object store's arrays) included.
    source = aligned((8, 4, 4, 3))
    tensor = shared_tensor(read_only(source))
    source[5] = 200
    assert int(tf.reduce_max(tensor[5])) == 200 and int(tf.reduce_max(tensor[4])) == 0
    floats = aligned((4, 2, 2, 3), np.float32)  # the whitened cache's dtype
    tensor = shared_tensor(read_only(floats))
    floats[1] = 1.5
    assert float(tensor[1, 0, 0, 0]) == 1.5


def test_a_misaligned_array_is_copied_and_still_gathers():
    raw = aligned((4 * 4 * 3 * 5 + 1,))
    x = raw[1:].reshape(5, 4, 4, 3)  # one byte off the boundary
    x[:] = np.arange(5, dtype=np.uint8)[:, None, None, None]
    tensor = shared_tensor(read_only(x))
    x[2] = 9  # a copy does not see it
    np.testing.assert_array_equal(tensor.numpy()[2], np.full((4, 4, 3), 2, np.uint8))


def private_mb() -> float:
    """This process's resident anonymous memory (MB): what a copy of the array would add."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's /proc")
def test_a_running_pipeline_holds_no_copy_of_the_array():
    # tf.data's default graph rewrites serialise the captured array as a constant when the iterator
    # starts: a copy per pipeline (128 MB more here). With them off the pipelines add a few MB.
    x = read_only(aligned((128 * 1024, 32, 32, 1)))  # 128 MB
    y = np.zeros(len(x), np.int32)
    for _ in tf.data.Dataset.range(2).map(lambda i: i + 1):  # tf.data's own start-up, not the pipeline's
        pass
    before = private_mb()
    train = make_dataset(x, y, np.arange(len(x)), 32, augment.to_float, shuffle_seed=0)
    test = make_dataset(x, y, np.arange(1000), 32, augment.to_float)
    running = [iter(train), iter(test)]
    for batches in running:
        next(batches)
    assert private_mb() - before < 40, "a pipeline copied the array"
