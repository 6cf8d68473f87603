"""Augmentation ops and policies, each eagerly and inside a tf.data pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainables import augment
from trainables.config import TrialConfig
from trainables.data import ImageDataset, load_digits, validation_split
from trainables.pipeline import make_dataset


def in_pipeline(op, images: np.ndarray) -> np.ndarray:
    """The op as a tf.data map over one batch, the way trainables.pipeline applies it."""
    return next(iter(tf.data.Dataset.from_tensors(images).map(op))).numpy()


def run_both(op, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return op(tf.constant(images)).numpy(), in_pipeline(op, images)


def correlated_images(n: int, side: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 images whose pixels are strongly correlated (a smooth random field), channel means differ."""
    rng = np.random.default_rng(seed)
    dim = side * side * 3
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim) + 2 * np.eye(dim)
    brightness = rng.normal(size=(n, 1))  # shared by every pixel of an image: strong correlations
    latent = 0.5 * rng.normal(size=(n, dim)) @ mixing.T + 1.5 * brightness
    images = 110 + 18 * latent.reshape(n, side, side, 3) + np.array([-40.0, 0.0, 40.0])
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def dataset(x: np.ndarray, name: str = "synthetic") -> ImageDataset:
    y = np.arange(len(x), dtype=np.int32) % 2
    return ImageDataset(name, x, y, x[:10], y[:10], 2)


# --- flips ---


@pytest.mark.parametrize("mode, axes", [("horizontal", [2]), ("vertical", [1]), ("horizontal_and_vertical", [1, 2])])
def test_flips_move_pixels_exactly_and_keep_labels(mode, axes):
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3)).astype(np.float32)
    labels = np.arange(64, dtype=np.int32)
    flip = augment.random_flip(mode, seed=3)
    allowed = [images]  # every image must come back unflipped or flipped along the mode's axes
    for ax in axes:
        allowed.append(np.flip(images, axis=ax))
    if len(axes) == 2:
        allowed.append(np.flip(images, axis=(1, 2)))
    for out in run_both(flip, images):
        matches = np.array([[np.array_equal(out[i], a[i]) for a in allowed] for i in range(len(images))])
        assert matches.any(axis=1).all(), "a flip produced pixels no flip can produce"
        assert matches[:, 1:].any(axis=1).sum() > 10 and matches[:, 0].sum() > 5  # random, both happen
    # Inside a (images, labels) pipeline the label of each image is untouched.
    ds = tf.data.Dataset.from_tensors((images, labels)).map(lambda x, y: (flip(x), y))
    out_images, out_labels = next(iter(ds))
    np.testing.assert_array_equal(out_labels.numpy(), labels)
    for i in range(64):  # and each output is a flip of its own input, not of a neighbour
        assert any(np.array_equal(out_images.numpy()[i], a[i]) for a in allowed)
    assert augment.random_flip("none") is None


# --- zoom ---


def test_zoom_keeps_shape_and_value_range_and_changes_images():
    images = np.random.default_rng(1).uniform(20, 230, (16, 32, 32, 3)).astype(np.float32)
    zoom = augment.random_zoom(0.2, seed=4)
    for out in run_both(zoom, images):
        assert out.shape == images.shape and out.dtype == np.float32
        assert out.min() >= images.min() - 1e-3 and out.max() <= images.max() + 1e-3
        changed = [not np.allclose(out[i], images[i]) for i in range(len(images))]
        assert sum(changed) >= 12  # zoom factors are drawn per image in [-0.2, 0.2]
    assert augment.random_zoom(0.0) is None


def test_zoom_of_a_constant_image_is_the_same_constant():
    images = np.full((4, 16, 16, 3), 77.0, dtype=np.float32)
    for out in run_both(augment.random_zoom(0.2, seed=5), images):
        np.testing.assert_allclose(out, 77.0, atol=1e-3)


def test_zoom_is_the_keras_zoom_transform():
    # The same affine map as Keras' RandomZoom for the factors drawn: compare with keras.ops.image.
    import keras

    images = np.random.default_rng(2).uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    seed = tf.constant([11, 7], tf.int64)
    out = augment.random_zoom(0.2, seed=9)(tf.constant(images), seed).numpy()
    factor = 1.0 + tf.random.stateless_uniform([8], augment._seed_of(9, seed), -0.2, 0.2).numpy()
    offset = 7.5 * (1.0 - factor)  # (side - 1) / 2 * (1 - f)
    zero = np.zeros(8, np.float32)
    matrix = np.stack([factor, zero, offset, zero, factor, offset, zero, zero], axis=1)
    expected = keras.ops.image.affine_transform(images, matrix, interpolation="bilinear", fill_mode="reflect")
    np.testing.assert_allclose(out, np.asarray(expected), atol=1e-3)


def test_random_ops_are_functions_of_the_batch_seed():
    images = np.random.default_rng(3).uniform(0, 255, (32, 8, 8, 3)).astype(np.float32)
    op = augment.compose(augment.random_flip("horizontal_and_vertical", 1), augment.random_zoom(0.2, 2))
    assert op.seeded
    a, b = (op(tf.constant(images), tf.constant([5, 6], tf.int64)).numpy() for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c = op(tf.constant(images), tf.constant([5, 7], tf.int64)).numpy()
    assert not np.allclose(a, c)


def test_augmented_pipeline_is_reproducible_under_parallel_maps():
    # Two pipelines built from the same seed give the same batches epoch after epoch, whichever
    # tf.data thread ran each map (Keras' stateful RandomFlip/RandomZoom did not); epochs differ.
    x = np.random.default_rng(4).integers(0, 256, (640, 8, 8, 3)).astype(np.uint8)
    y = np.zeros(640, np.int32)
    op = augment.compose(augment.to_float, augment.random_flip("horizontal", 1), augment.random_zoom(0.2, 2))

    def epochs(seed: int) -> list[np.ndarray]:
        ds = make_dataset(x, y, np.arange(640), 32, op, shuffle_seed=seed)
        return [np.concatenate([b.numpy() for b, _ in ds]) for _ in range(2)]

    first, again, other = epochs(3), epochs(3), epochs(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], first[1])  # a new draw each epoch
    assert not np.allclose(first[0], other[0])


# --- pad-and-crop (crop_flip) ---


def pad_and_crop(image: np.ndarray, pad: int, dx: int, dy: int) -> np.ndarray:
    """The textbook op: zero-pad `pad` pixels, crop the original size at offset (pad + dy, pad + dx)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def crop_candidates(image: np.ndarray, pad: int, flips: bool) -> list[np.ndarray]:
    shifted = [pad_and_crop(image, pad, dx, dy) for dx in range(-pad, pad + 1) for dy in range(-pad, pad + 1)]
    return shifted + ([np.flip(c, axis=1) for c in shifted] if flips else [])


def test_random_crop_is_pad_and_crop_with_zeros_at_an_offset_per_image():
    images = np.random.default_rng(5).integers(1, 256, (24, 8, 8, 3)).astype(np.float32)  # no zero pixel
    crop = augment.random_crop(2, seed=7)
    seed = tf.constant([3, 4], tf.int64)
    eager = crop(tf.constant(images), seed).numpy()
    piped = next(iter(tf.data.Dataset.from_tensors(images).map(lambda b: crop(b, seed)))).numpy()
    np.testing.assert_array_equal(eager, piped)  # the same op eagerly and in a pipeline
    offsets = set()
    for i in range(len(images)):
        matches = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if np.array_equal(eager[i], pad_and_crop(images[i], 2, dx, dy))
        ]
        assert matches, f"image {i} is no pad-and-crop of its input"
        offsets.add(matches[0])
    assert len(offsets) > 8  # each image draws its own offset
    assert augment.random_crop(0) is None


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_random_flip_flips_the_images_tf_images_flips_flip_for_the_seed(mode):
    images = np.random.default_rng(8).integers(0, 256, (32, 6, 6, 3)).astype(np.uint8)
    for batch_seed in ([1, 2], [5, 9]):
        seed = tf.constant(batch_seed, tf.int64)
        seeds = tf.random.experimental.stateless_split(augment._seed_of(4, seed), 2)
        expected = tf.constant(images)
        if "horizontal" in mode:
            expected = tf.image.stateless_random_flip_left_right(expected, seeds[0])
        if "vertical" in mode:
            expected = tf.image.stateless_random_flip_up_down(expected, seeds[1])
        flipped = augment.random_flip(mode, seed=4)(tf.constant(images), seed).numpy()
        np.testing.assert_array_equal(flipped, expected.numpy())
        assert 4 < sum(not np.array_equal(a, b) for a, b in zip(flipped, images, strict=True)) < 32


def test_random_crop_takes_the_offsets_its_seed_draws_on_uint8_and_float_alike():
    images = np.random.default_rng(6).integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    crop = augment.random_crop(2, seed=7)
    seed = tf.constant([3, 4], tf.int64)
    # The draws are the op's: (dx, dy) per image from its own seed, so a seed gives the batches it gave.
    shifts = tf.random.stateless_uniform([16, 2], augment._seed_of(7, seed), -2, 3, tf.int32).numpy()
    out = crop(tf.constant(images), seed).numpy()
    assert out.dtype == np.uint8
    for i, (dx, dy) in enumerate(shifts):
        np.testing.assert_array_equal(out[i], pad_and_crop(images[i], 2, int(dx), int(dy)))
    as_float = crop(tf.constant(images.astype(np.float32)), seed).numpy()
    np.testing.assert_array_equal(as_float, out.astype(np.float32))


def test_crop_flip_policy_shifts_and_mirrors_only_horizontally_then_normalises(digits, digits_cache):
    config, train_idx, val_idx, train_fn, eval_fn = policy(digits, digits_cache, augmentation="crop_flip")
    assert augment.crop_padding(digits.image_shape[0]) == 4 == augment.crop_padding(32)
    stats = augment.channel_stats(digits, train_idx, digits_cache).arrays
    batch = digits.x_train[train_idx[:48]]
    seed = tf.constant([11, 12], tf.int64)
    eager = train_fn(tf.constant(batch), seed).numpy()
    piped = next(iter(tf.data.Dataset.from_tensors(batch).map(lambda b: train_fn(b, seed)))).numpy()
    np.testing.assert_allclose(eager, piped, atol=1e-6)
    assert eager.dtype == np.float32 and eager.shape == batch.shape
    # Undo the normalisation: every image is a shift of its input, or the mirror of one, never upside down.
    raw = np.round(eager * stats["std"] + stats["mean"]).astype(np.int64)
    assert raw.min() >= 0 and raw.max() <= 255
    mirrored = 0
    for i in range(len(batch)):
        image = batch[i].astype(np.int64)
        shifts = crop_candidates(image, 4, flips=False)
        if any(np.array_equal(raw[i], c) for c in shifts):
            continue
        assert any(np.array_equal(raw[i], c) for c in crop_candidates(image, 4, flips=True)), i
        mirrored += 1
    assert 8 < mirrored < 40  # flipped with probability 1/2
    # Evaluation batches: the normalisation alone.
    val = digits.x_train[val_idx[:16]]
    np.testing.assert_allclose(
        eval_fn(tf.constant(val)).numpy(), (val - stats["mean"]) / stats["std"], rtol=1e-5, atol=1e-5
    )


def test_crop_flip_pipeline_is_seeded_and_redraws_each_epoch(digits, digits_cache):
    config, train_idx, _, train_fn, _ = policy(digits, digits_cache, augmentation="crop_flip")
    assert train_fn.seeded

    def epochs(seed: int) -> list[np.ndarray]:
        ds = make_dataset(digits.x_train, digits.y_train, train_idx[:256], 64, train_fn, shuffle_seed=seed)
        return [np.concatenate([b.numpy() for b, _ in ds]) for _ in range(2)]

    first, again, other = epochs(1), epochs(1), epochs(2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[0], other[0])


# --- normalisation ---


def test_normalisation_gives_zero_mean_unit_std_per_channel_on_the_training_split(tmp_path):
    x = correlated_images(600)
    train_idx = np.arange(0, 600, 2)
    stats = augment.channel_stats(dataset(x), train_idx, tmp_path).arrays
    np.testing.assert_allclose(stats["mean"], x[train_idx].reshape(-1, 3).mean(axis=0), rtol=1e-9)
    norm = augment.normalize(stats["mean"], stats["std"])
    for out in run_both(norm, x[train_idx]):
        out = out.reshape(-1, 3).astype(np.float64)  # float32 sums over 10^6 values drift by 1e-3
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


# --- ZCA ---


def test_zca_whitened_training_data_has_identity_covariance(tmp_path):
    x = correlated_images(3000)  # 3000 samples of 108 features: a well-determined covariance
    train_idx = np.arange(3000)
    raw = x.reshape(len(x), -1).astype(np.float64)
    raw_corr = np.corrcoef(raw, rowvar=False)
    assert np.abs(raw_corr - np.eye(raw.shape[1])).max() > 0.3  # the input is far from white
    stats = augment.zca_stats(dataset(x), train_idx, epsilon=1e-6, cache_dir=tmp_path).arrays
    whiten = augment.zca_whiten(stats["matrix"], stats["bias"])
    for out in run_both(whiten, x):
        flat = out.reshape(len(out), -1).astype(np.float64)
        assert out.shape == x.shape and out.dtype == np.float32
        np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-3)
        cov = np.cov(flat, rowvar=False, bias=True)
        np.testing.assert_allclose(cov, np.eye(cov.shape[0]), atol=2e-3)


@pytest.mark.parametrize("n", [500, 30])  # more images than the 48 features, and fewer
def test_zca_matches_normalise_then_whiten_unfolded(n):
    # The folded affine map equals the textbook steps: per-channel normalise, centre, U S^-1/2 U^T,
    # on training and on unseen images (which reach the covariance's null space when n < 48).
    x = correlated_images(n + 20, side=4)
    fitted = augment.fit_zca(x, np.arange(n), epsilon=0.1)

    def normalised(images):
        return ((images.reshape(len(images), -1, 3).astype(np.float64) - fitted["mean"]) / fitted["std"]).reshape(
            len(images), -1
        )

    z = normalised(x[:n])
    mu = z.mean(axis=0)
    s, u = np.linalg.eigh(np.cov(z, rowvar=False, bias=True))
    textbook = (u / np.sqrt(np.maximum(s, 0) + 0.1)) @ u.T
    expected = (normalised(x) - mu) @ textbook
    got = x.reshape(len(x), -1).astype(np.float64) @ fitted["matrix"] + fitted["bias"]
    np.testing.assert_allclose(got, expected, atol=2e-4)


# --- cache ---


def test_statistics_are_cached_on_disk_and_not_refitted(tmp_path):
    data = dataset(correlated_images(200))
    idx = np.arange(150)
    first = augment.zca_stats(data, idx, 0.1, tmp_path)
    assert first.source == "fitted" and first.path.is_file() and first.path.parent == tmp_path
    mtime = first.path.stat().st_mtime_ns
    second = augment.zca_stats(data, idx, 0.1, tmp_path)
    assert second.source == "disk" and second.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.arrays["matrix"], first.arrays["matrix"])
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temp file
    # Another split, epsilon, or dataset content is another file, never a stale hit.
    assert augment.zca_stats(data, idx[:-1], 0.1, tmp_path).source == "fitted"
    assert augment.zca_stats(data, idx, 0.01, tmp_path).source == "fitted"
    other = dataset(correlated_images(200, seed=1))
    assert augment.zca_stats(other, idx, 0.1, tmp_path).source == "fitted"
    assert augment.channel_stats(data, idx, tmp_path).source == "fitted"
    assert augment.channel_stats(data, idx, tmp_path).source == "disk"
    assert len(list(tmp_path.glob("*.npz"))) == 5


def test_cache_location_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(augment.CACHE_ENV, str(tmp_path / "node-cache"))
    stats = augment.channel_stats(dataset(correlated_images(40)), np.arange(40))
    assert stats.path.parent == tmp_path / "node-cache"


def test_corrupt_cache_file_is_refitted(tmp_path):
    data = dataset(correlated_images(100))
    first = augment.channel_stats(data, np.arange(100), tmp_path)
    first.path.write_bytes(b"truncated")
    again = augment.channel_stats(data, np.arange(100), tmp_path)
    assert again.source == "fitted"
    np.testing.assert_array_equal(again.arrays["mean"], first.arrays["mean"])


# --- policies through the trial's pipeline ---


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    # One node cache for the digits tests, as on a real node: the 3072x3072 ZCA is fitted once.
    return tmp_path_factory.mktemp("node-cache")


def policy(digits, tmp_path, **kw):
    config = TrialConfig(model="convnet", dataset="digits", **kw)
    train_idx, val_idx = validation_split(digits.y_train, config.seed)
    train_fn, eval_fn = augment.policy_transforms(config, digits, train_idx, cache_dir=tmp_path)
    return config, train_idx, val_idx, train_fn, eval_fn


def test_simple_scales_to_unit_range(digits, digits_cache):
    _, _, _, train_fn, eval_fn = policy(digits, digits_cache)
    for out in run_both(train_fn, digits.x_train[:32]):
        np.testing.assert_allclose(out, digits.x_train[:32] / 255.0, atol=1e-6)
    assert eval_fn is train_fn


@pytest.mark.parametrize("name", ["complex", "whitening"])
def test_evaluation_transform_is_deterministic_and_training_transform_is_not(digits, digits_cache, name):
    config, train_idx, val_idx, train_fn, eval_fn = policy(digits, digits_cache, augmentation=name)
    val = digits.x_train[val_idx[:64]]
    a, b = run_both(eval_fn, val)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(eval_fn(tf.constant(val)).numpy(), a, atol=1e-5)
    batch = digits.x_train[train_idx[:64]]
    if name == "complex":  # flips and zoom on training batches only
        assert not np.allclose(train_fn(tf.constant(batch)).numpy(), eval_fn(tf.constant(batch)).numpy())
    else:  # whitening has no random part
        np.testing.assert_allclose(train_fn(tf.constant(batch)).numpy(), eval_fn(tf.constant(batch)).numpy(), atol=1e-4)


def test_complex_policy_normalises_the_training_split(digits, digits_cache):
    # No flips or zoom: what is left is the fitted normalisation, zero mean and unit std per channel.
    config, train_idx, _, train_fn, _ = policy(
        digits, digits_cache, augmentation="complex", flip="none", zoom_range=0.0
    )
    ds = make_dataset(digits.x_train, digits.y_train, train_idx, 256, train_fn)
    out = np.concatenate([x.numpy() for x, _ in ds]).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


def test_policies_feed_a_convnet_through_the_trial_pipeline(digits, digits_cache, monkeypatch):
    # The trainable's own code path (_compile + _datasets) for one epoch per policy; real training.
    import keras

    from trainables.trainable import _compile, _datasets

    monkeypatch.setenv(augment.CACHE_ENV, str(digits_cache))
    for name in ("complex", "whitening"):
        # No BN: two epochs leave BatchNorm's moving statistics unwarmed, which is not what this tests.
        config = TrialConfig(
            model="convnet",
            dataset="digits",
            augmentation=name,
            depth=2,
            base_width=8,
            pool_after="1,2",
            batch_size=64,
            optimizer="adam",
            learning_rate=3e-3,
            max_epochs=1,
            bn_position="none",
        )
        keras.utils.set_random_seed(0)
        split = validation_split(digits.y_train, config.seed)
        model = _compile(config, digits, len(split[0]))
        train, val, test = _datasets(config, digits, split, shuffle_seed=0)
        # shuffle=False: the pipeline shuffles its indices each epoch itself.
        history = model.fit(train, validation_data=val, epochs=2, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert history.history["val_accuracy"][-1] > 0.5, (name, history.history)  # chance is 0.1
        _, test_acc = model.evaluate(test, verbose=0)
        assert test_acc > 0.5
    assert len(list(digits_cache.glob("*.npz"))) == 2  # channel stats and ZCA, each fitted once


def test_transfer_model_gets_the_backbone_input_transform(digits, tmp_path):
    import keras

    images = digits.x_train[:8]
    expected = keras.applications.resnet50.preprocess_input(
        tf.image.resize(images.astype(np.float32), (40, 40)).numpy()
    )
    for aug in ("simple", "complex"):
        config = TrialConfig(model="resnet50", dataset="digits", input_size=40, weights="none", augmentation=aug)
        train_fn, eval_fn = augment.policy_transforms(config, digits, np.arange(100), tmp_path)
        for out in run_both(eval_fn, images):
            np.testing.assert_allclose(out, expected, atol=1e-3)
        assert train_fn(tf.constant(images)).shape == (8, 40, 40, 3)
    with pytest.raises(ValueError, match="whitening"):
        augment.policy_transforms(
            TrialConfig(model="resnet50", dataset="digits", input_size=40, augmentation="whitening"),
            digits,
            np.arange(100),
            tmp_path,
        )


def test_whitening_inputs_are_the_batched_transform_precomputed_once_and_cached(digits, tmp_path):
    """`whitening` gathers from the dataset whitened once (float32, memory-mapped from the node cache):
    the same values as the per-batch ZCA transform, computed by the first trial and loaded after."""
    config = TrialConfig(model="convnet", dataset="digits", augmentation="whitening")
    train_idx, _ = validation_split(digits.y_train, config.seed)
    inputs = augment.policy_inputs(config, digits, train_idx, cache_dir=tmp_path)
    _, per_batch = augment.policy_transforms(config, digits, train_idx, cache_dir=tmp_path)
    assert inputs.x_train.dtype == np.float32 and inputs.x_train.shape == digits.x_train.shape
    assert isinstance(inputs.x_train, np.memmap) and not inputs.x_train.flags.writeable
    for x, whitened in ((digits.x_train[:64], inputs.x_train[:64]), (digits.x_test[:64], inputs.x_test[:64])):
        np.testing.assert_allclose(whitened, per_batch(tf.constant(x)).numpy(), rtol=1e-4, atol=1e-3)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    again = augment.policy_inputs(config, digits, train_idx, cache_dir=tmp_path)  # the next trial
    assert [f.stat().st_mtime_ns for f in files] == stamps  # loaded, not recomputed
    np.testing.assert_array_equal(again.x_test, inputs.x_test)
    ds = make_dataset(inputs.x_train, digits.y_train, train_idx[:100], 32, inputs.train_transform)
    images, labels = next(iter(ds))
    assert images.dtype == tf.float32 and images.shape == (32, *digits.image_shape)
    np.testing.assert_array_equal(images.numpy(), inputs.x_train[train_idx[:32]])
