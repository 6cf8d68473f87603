"""Augmentation policies as named, batched transforms of uint8 image batches.

Every op takes and returns a whole batch (B, H, W, C), eagerly or inside a tf.data
map, so its cost is one op per batch, never one per image.

- `simple`: uint8 [0, 255] -> float32 [0, 1].
- `complex`: random flips (`flip`) and random zoom up to `zoom_range`, then per-channel
  centring and std scaling with the mean and std of the trial's training split.
- `crop_flip`: the standard CIFAR augmentation: each image shifted by up to an eighth of its side
  (zero-padded by that many pixels, then a random crop back to its size: 4 px at 32x32) and flipped
  left-right with probability 1/2, then the same per-channel normalisation as `complex`. Never an
  upside-down image, never a resampled pixel.
- `whitening`: the same normalisation, then ZCA whitening fitted on the training split
  (`zca_epsilon` added to the covariance eigenvalues); normalisation and ZCA are folded
  into one affine map. It has no random part, so a trial does not apply it per batch:
  the whole dataset is whitened once per dataset, training split and epsilon, cached
  on the node's disk beside the statistics as float32 `.npy` files, read memory-mapped
  (the page cache is shared by every trial on the node), and batches are gathered from
  it (`policy_inputs`).

Validation and test batches get the deterministic part only (the normalisation or
ZCA), never flips or zoom. Statistics are fitted once per dataset, training split and
epsilon, in float64, and cached on the node's disk (`KERAS_HPO_CACHE`, default
~/.cache/keras-hpo), so trials after the first on a node load them in milliseconds
and no epoch ever refits them.

Models whose registry entry has a `preprocess` (the transfer backbones) get that input
transform (resize + `preprocess_input`) instead of a fitted normalisation; `complex`
then adds the flips and zoom to training batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from trainables import registry
from trainables.config import TrialConfig
from trainables.data import ImageDataset
from trainables.pipeline import BatchFn, to_unit_float

CACHE_ENV = "KERAS_HPO_CACHE"
STATS_FORMAT = 1  # bump when the cached arrays change meaning, so old files are never read
FIT_CHUNK = 1024  # images per float64 chunk while fitting: bounds fitting memory to ~25 MB at 32x32x3


# --- ops: each a small named function of a whole batch -------------------------------------------


def to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [0, 255]; the fitted normalisation sets the scale afterwards."""
    return tf.cast(images, tf.float32)


def compose(*ops: BatchFn) -> BatchFn:
    """One transform applying `ops` in order. If any op is random (`seeded`), so is the result:
    it takes an optional per-batch seed and hands each random op its own stream of it."""
    random_ops = [op for op in ops if getattr(op, "seeded", False)]

    def composed(images: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        split = tf.random.experimental.stateless_split(seed, len(random_ops)) if seed is not None else None
        drawn = 0
        for op in ops:
            if split is not None and getattr(op, "seeded", False):
                images = op(images, split[drawn])  # type: ignore[call-arg]
                drawn += 1
            else:
                images = op(images)
        return images

    composed.__name__ = "+".join(getattr(op, "__name__", type(op).__name__) for op in ops)
    composed.seeded = bool(random_ops)  # type: ignore[attr-defined]
    return composed


# Random ops are stateless: each batch's draws are a function of (the trial's seed, a per-batch seed)
# that make_dataset zips with the batches, so a seeded trial sees the same augmented batches in any
# process, whichever tf.data thread runs the map. (Keras' RandomFlip/RandomZoom layers draw from one
# stateful generator, whose draws parallel map calls take in thread order: not reproducible.)


def _seed_of(base: int, seed: tf.Tensor | None) -> tf.Tensor:
    """The op's own (2,) int64 seed: its base mixed into the per-batch seed (or (base, 0) alone)."""
    if seed is None:
        return tf.constant([base, 0], tf.int64)
    return tf.cast(seed, tf.int64) + tf.constant([base, 0], tf.int64)


def _flip_where(images: tf.Tensor, axis: int, seed: tf.Tensor) -> tf.Tensor:
    """Each image of the batch reversed along `axis` (2: left-right, 1: up-down) where its draw rounds to 1:
    the draws of tf.image.stateless_random_flip_left_right / _up_down with this seed, so the same images
    flip, chosen by one select instead of their arithmetic blend of the batch and its mirror (5 ops)."""
    draws = tf.random.stateless_uniform([tf.shape(images)[0]], seed, 0, 1.0)
    flipped = tf.reshape(tf.round(draws) > 0.5, [-1, 1, 1, 1])
    return tf.where(flipped, tf.reverse(images, [axis]), images)


def random_flip(mode: str, seed: int | None = None) -> BatchFn | None:
    """Each image flipped independently with probability 1/2 per axis in `mode`
    (horizontal, vertical, horizontal_and_vertical); None for `none`."""
    if mode == "none":
        return None
    base = 0 if seed is None else int(seed)
    horizontal, vertical = "horizontal" in mode, "vertical" in mode

    def flip(images: tf.Tensor, batch_seed: tf.Tensor | None = None) -> tf.Tensor:
        seeds = tf.random.experimental.stateless_split(_seed_of(base, batch_seed), 2)
        if horizontal:
            images = _flip_where(images, 2, seeds[0])
        if vertical:
            images = _flip_where(images, 1, seeds[1])
        return images

    flip.seeded = True  # type: ignore[attr-defined]
    return flip


def _scale_and_shift(
    images: tf.Tensor, scale: tf.Tensor, dx: tf.Tensor, dy: tf.Tensor, interpolation: str, fill_mode: str
) -> tf.Tensor:
    """Per image i, output pixel (x, y) samples the input at (scale[i] x + dx[i], scale[i] y + dy[i]),
    as float32; where that falls outside the image, `fill_mode` decides (CONSTANT fills 0)."""
    zeros = tf.zeros_like(scale)
    transforms = tf.stack([scale, zeros, dx, zeros, scale, dy, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode,
    )


def random_zoom(zoom_range: float, seed: int | None = None) -> BatchFn | None:
    """Each image zoomed in or out independently by up to `zoom_range` of its side (aspect kept,
    bilinear, borders reflected, so shape and value range are kept); None for 0. The same
    transform as Keras' RandomZoom(height_factor=(-zoom_range, zoom_range), fill_mode='reflect')."""
    if zoom_range == 0:
        return None
    base = 0 if seed is None else int(seed)

    def zoom(images: tf.Tensor, batch_seed: tf.Tensor | None = None) -> tf.Tensor:
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        factor = 1.0 + tf.random.stateless_uniform(
            [batch], _seed_of(base, batch_seed), -zoom_range, zoom_range, tf.float32
        )
        # Output pixel (x, y) samples the input at (f x + dx, f y + dy): f > 1 zooms out about the centre.
        dx = (tf.cast(width, tf.float32) - 1.0) / 2.0 * (1.0 - factor)
        dy = (tf.cast(height, tf.float32) - 1.0) / 2.0 * (1.0 - factor)
        return _scale_and_shift(images, factor, dx, dy, interpolation="BILINEAR", fill_mode="REFLECT")

    zoom.seeded = True  # type: ignore[attr-defined]
    return zoom


def random_crop(padding: int, seed: int | None = None) -> BatchFn | None:
    """Pad-and-random-crop of each image independently: zero-pad `padding` pixels on every side, crop
    a window of the original size at a uniform offset (dx, dy) in [-padding, padding]^2 from the centre.
    Two batched gathers (rows, then columns) of the padded batch in its own dtype: on uint8 that moves a
    quarter of the bytes a float32 resampling would, and computes no coordinate per pixel; None for 0."""
    if padding == 0:
        return None
    base = 0 if seed is None else int(seed)

    def crop(images: tf.Tensor, batch_seed: tf.Tensor | None = None) -> tf.Tensor:
        shape = tf.shape(images)
        shifts = tf.random.stateless_uniform([shape[0], 2], _seed_of(base, batch_seed), -padding, padding + 1, tf.int32)
        # Output pixel (x, y) takes the input's (x + dx, y + dy), i.e. the padded batch's (x + dx + padding, ...).
        padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
        rows = shifts[:, 1:2] + padding + tf.range(shape[1])[tf.newaxis, :]  # (B, H)
        cols = shifts[:, 0:1] + padding + tf.range(shape[2])[tf.newaxis, :]  # (B, W)
        cropped = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W + 2 padding, C)
        return tf.gather(cropped, cols, axis=2, batch_dims=1)

    crop.seeded = True  # type: ignore[attr-defined]
    return crop


def crop_padding(image_side: int) -> int:
    """The pad of `crop_flip`: an eighth of the image side, in pixels (4 at CIFAR's 32)."""
    return max(1, image_side // 8)


def normalize(mean: np.ndarray, std: np.ndarray) -> BatchFn:
    """Per-channel (x - mean) / std with statistics fitted on the training split."""
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)

    def normalise(images: tf.Tensor) -> tf.Tensor:
        return (tf.cast(images, tf.float32) - mean_t) / std_t

    return normalise


def zca_whiten(matrix: np.ndarray, bias: np.ndarray) -> BatchFn:
    """Flatten (B, H, W, C) -> (B, H*W*C), one matmul with the folded ZCA matrix, add the bias,
    reshape back."""
    matrix_t = tf.constant(matrix, tf.float32)
    bias_t = tf.constant(bias, tf.float32)
    dim = int(matrix.shape[0])

    def whiten(images: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(tf.cast(images, tf.float32), (-1, dim))
        return tf.reshape(tf.matmul(flat, matrix_t) + bias_t, tf.shape(images))

    return whiten


# --- statistics: fitted once in float64, cached on disk ---------------------------------------


@dataclasses.dataclass(frozen=True)
class FittedStats:
    arrays: dict[str, np.ndarray]
    source: str  # "fitted" (computed now) or "disk" (loaded from the cache)
    path: Path | None  # the cache file, None when caching is off


def fit_channel_stats(x: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean and std (population) of x[idx] in pixel units, accumulated in float64."""
    channels = x.shape[-1]
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(idx), FIT_CHUNK):
        chunk = x[idx[start : start + FIT_CHUNK]].astype(np.float64).reshape(-1, channels)
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
        count += len(chunk)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant channel stays as it is instead of dividing by 0
    return {"mean": mean, "std": std}


def fit_zca(x: np.ndarray, idx: np.ndarray, epsilon: float) -> dict[str, np.ndarray]:
    """Per-channel normalisation followed by ZCA, folded into one affine map `flat @ matrix + bias`.

    With z = normalised, flattened images and mu their per-feature mean, ZCA is
    W = U diag(1 / sqrt(S + epsilon)) U^T for the covariance U S U^T of z; folding gives
    matrix = diag(1 / std) W and bias = -(mean / std + mu) W. Fitted in float64.
    """
    stats = fit_channel_stats(x, idx)
    dim = int(np.prod(x.shape[1:]))
    reps = dim // x.shape[-1]
    mean_flat = np.tile(stats["mean"], reps)  # HWC flattening: channel varies fastest
    std_flat = np.tile(stats["std"], reps)

    def normalised(rows: np.ndarray) -> np.ndarray:
        return (x[rows].reshape(-1, dim).astype(np.float64) - mean_flat) / std_flat

    n = len(idx)
    if n >= dim:  # e.g. CIFAR: 11,250 x 3,072; accumulate the covariance in chunks
        total, gram = np.zeros(dim), np.zeros((dim, dim))
        for start in range(0, n, FIT_CHUNK):
            z = normalised(idx[start : start + FIT_CHUNK])
            total += z.sum(axis=0)
            gram += z.T @ z
        mu = total / n
        eigvals, eigvecs = np.linalg.eigh(gram / n - np.outer(mu, mu))
        eigvals = np.maximum(eigvals, 0.0)  # round-off can make a zero eigenvalue slightly negative
        whitening = (eigvecs / np.sqrt(eigvals + epsilon)) @ eigvecs.T
    else:  # fewer images than features (digits: 1,293 x 3,072): the n x n problem is far cheaper
        z = normalised(idx)
        mu = z.mean(axis=0)
        z -= mu
        small, v = np.linalg.eigh(z @ z.T / n)  # the covariance's nonzero eigenvalues, n x n
        keep = small > 1e-10 * max(small.max(), 1e-300)
        eigvals = small[keep]
        eigvecs = (z.T @ v[:, keep]) / np.sqrt(n * eigvals)  # unit eigenvectors of the covariance
        # The covariance's null space (eigenvalue 0) is scaled by 1/sqrt(epsilon), as the full
        # decomposition would: W = I/sqrt(eps) + U (1/sqrt(S + eps) - 1/sqrt(eps)) U^T.
        scale = 1.0 / np.sqrt(eigvals + epsilon) - 1.0 / np.sqrt(epsilon)
        whitening = np.eye(dim) / np.sqrt(epsilon) + (eigvecs * scale) @ eigvecs.T
    matrix = whitening / std_flat[:, None]
    bias = -((mean_flat / std_flat + mu) @ whitening)
    return {**stats, "matrix": matrix.astype(np.float32), "bias": bias.astype(np.float32)}


def stats_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "keras-hpo")


def stats_key(kind: str, data: ImageDataset, train_idx: np.ndarray, epsilon: float | None = None) -> str:
    """Names the statistics by what they depend on: the dataset's pixels (not just its name, so a
    different --data-dir or image size never reuses stale stats), the training indices, epsilon."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (str(STATS_FORMAT), kind, data.name, str(data.x_train.shape), repr(epsilon)):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(data.x_train).data.cast("B"))  # ~40 ms for CIFAR-25, no copy
    digest.update(np.asarray(train_idx, dtype=np.int64).tobytes())
    return f"{data.name}-{kind}-{digest.hexdigest()}"


def cached_stats(
    kind: str,
    data: ImageDataset,
    train_idx: np.ndarray,
    fit: Callable[[], dict[str, np.ndarray]],
    epsilon: float | None = None,
    cache_dir: Path | None = None,
) -> FittedStats:
    """Load the statistics from the node's disk cache, or fit and write them atomically.

    A lock file makes trials that start together on one node fit once: the others wait
    and then load the file.
    """
    from filelock import FileLock

    folder = Path(cache_dir) if cache_dir is not None else stats_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stats_key(kind, data, train_idx, epsilon)}.npz"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            try:
                with np.load(path) as saved:
                    return FittedStats({k: saved[k] for k in saved.files}, "disk", path)
            except (OSError, ValueError, EOFError):
                pass  # unreadable (e.g. a disk filled mid-write elsewhere): fit again and replace it
        arrays = fit()
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return FittedStats(arrays, "fitted", path)


def channel_stats(data: ImageDataset, train_idx: np.ndarray, cache_dir: Path | None = None) -> FittedStats:
    return cached_stats(
        "channel", data, train_idx, lambda: fit_channel_stats(data.x_train, train_idx), cache_dir=cache_dir
    )


def zca_stats(data: ImageDataset, train_idx: np.ndarray, epsilon: float, cache_dir: Path | None = None) -> FittedStats:
    return cached_stats(
        "zca", data, train_idx, lambda: fit_zca(data.x_train, train_idx, epsilon), epsilon=epsilon, cache_dir=cache_dir
    )


# --- policies ---------------------------------------------------------------------------------


def _random_ops(config: TrialConfig) -> list[BatchFn]:
    ops = [random_flip(config.flip, config.seed), random_zoom(config.zoom_range, config.seed + 1)]
    return [op for op in ops if op is not None]


def simple(  # a policy's signature: `simple` reads none of its arguments
    config: TrialConfig,  # noqa: ARG001
    data: ImageDataset,  # noqa: ARG001
    train_idx: np.ndarray,  # noqa: ARG001
    cache_dir: Path | None = None,  # noqa: ARG001
) -> tuple[BatchFn, BatchFn]:
    return to_unit_float, to_unit_float


def complex_policy(
    config: TrialConfig, data: ImageDataset, train_idx: np.ndarray, cache_dir: Path | None = None
) -> tuple[BatchFn, BatchFn]:
    stats = channel_stats(data, train_idx, cache_dir).arrays
    norm = normalize(stats["mean"], stats["std"])
    # Flips and zoom act on raw pixels, then the normalisation fitted on raw training pixels.
    return compose(to_float, *_random_ops(config), norm), compose(to_float, norm)


def crop_flip(
    config: TrialConfig, data: ImageDataset, train_idx: np.ndarray, cache_dir: Path | None = None
) -> tuple[BatchFn, BatchFn]:
    stats = channel_stats(data, train_idx, cache_dir).arrays
    norm = normalize(stats["mean"], stats["std"])
    # The shift and the mirror move whole uint8 pixels, so they run before the cast (a quarter of the bytes).
    return compose(*_crop_flip_ops(config, data.image_shape[0]), to_float, norm), compose(to_float, norm)


def _crop_flip_ops(config: TrialConfig, image_side: int) -> list[BatchFn]:
    ops = [random_crop(crop_padding(image_side), config.seed + 2), random_flip("horizontal", config.seed)]
    return [op for op in ops if op is not None]


def whitening(
    config: TrialConfig, data: ImageDataset, train_idx: np.ndarray, cache_dir: Path | None = None
) -> tuple[BatchFn, BatchFn]:
    stats = zca_stats(data, train_idx, config.zca_epsilon, cache_dir).arrays
    whiten = zca_whiten(stats["matrix"], stats["bias"])
    return whiten, whiten


POLICIES = {"simple": simple, "complex": complex_policy, "whitening": whitening, "crop_flip": crop_flip}


def as_is(images: tf.Tensor) -> tf.Tensor:
    """The transform of precomputed (already whitened, float32) batches: none."""
    return images


@dataclasses.dataclass(frozen=True)
class PolicyInputs:
    """What a trial's pipeline gathers from and what it applies to each gathered batch."""

    x_train: np.ndarray  # uint8 images, or float32 ones precomputed by the policy
    x_test: np.ndarray
    train_transform: BatchFn
    eval_transform: BatchFn


def policy_inputs(
    config: TrialConfig, data: ImageDataset, train_idx: np.ndarray, cache_dir: Path | None = None
) -> PolicyInputs:
    """The arrays to gather batches from and the batched transforms of the config's policy: for
    `whitening` the dataset whitened once and cached (see whitened_arrays), else the dataset itself
    and policy_transforms."""
    # A model with its own preprocessing (a pretrained backbone) refuses whitening in policy_transforms.
    if config.augmentation == "whitening" and registry.model(config.model).preprocess is None:
        x_train, x_test = whitened_arrays(data, train_idx, config.zca_epsilon, cache_dir)
        return PolicyInputs(x_train, x_test, as_is, as_is)
    train_tf, eval_tf = policy_transforms(config, data, train_idx, cache_dir)
    return PolicyInputs(data.x_train, data.x_test, train_tf, eval_tf)


def whiten_array(x: np.ndarray, matrix: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """out[i] = flat(x[i]) @ matrix + bias for every image, in float32 chunks of FIT_CHUNK images."""
    dim = matrix.shape[0]
    for start in range(0, len(x), FIT_CHUNK):
        flat = x[start : start + FIT_CHUNK].reshape(-1, dim).astype(np.float32)
        out[start : start + FIT_CHUNK] = (flat @ matrix + bias).reshape(-1, *x.shape[1:])


def whitened_arrays(
    data: ImageDataset, train_idx: np.ndarray, epsilon: float, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(x_train, x_test) whitened with the ZCA fitted on `train_idx`, float32, memory-mapped read-only
    from `<zca stats file>-{train,test}.npy` in the node cache; computed once (under the same kind of
    lock as the statistics) by the first trial that needs them. 4 bytes per pixel: 154 MB + 31 MB for
    CIFAR-100 0..24, on disk and in the shared page cache, not in any trial's private memory."""
    from filelock import FileLock

    stats = zca_stats(data, train_idx, epsilon, cache_dir)
    folder = stats.path.parent if stats.path is not None else stats_cache_dir()
    stem = stats.path.stem if stats.path is not None else stats_key("zca", data, train_idx, epsilon)
    out = []
    with FileLock(str(folder / f"{stem}-whitened.lock")):
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            path = folder / f"{stem}-{split}.npy"
            if path.is_file():
                try:
                    arr = np.load(path, mmap_mode="r")
                    if arr.shape == x.shape and arr.dtype == np.float32:
                        out.append(arr)
                        continue
                except (OSError, ValueError):
                    pass  # unreadable or truncated: compute it again and replace it
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
            os.close(fd)
            try:
                target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=x.shape)
                whiten_array(x, stats.arrays["matrix"], stats.arrays["bias"], target)
                target.flush()
                del target
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            out.append(np.load(path, mmap_mode="r"))
    return out[0], out[1]


def policy_transforms(
    config: TrialConfig, data: ImageDataset, train_idx: np.ndarray, cache_dir: Path | None = None
) -> tuple[BatchFn, BatchFn]:
    """(training transform, evaluation transform) of the config's augmentation policy."""
    if registry.model(config.model).preprocess is not None:
        return _transfer_transforms(config)
    return POLICIES[config.augmentation](config, data, train_idx, cache_dir)


def _transfer_transforms(config: TrialConfig) -> tuple[BatchFn, BatchFn]:
    if config.augmentation == "whitening":
        raise ValueError(
            f"augmentation='whitening' does not apply to {config.model}: a pretrained "
            "backbone expects its own preprocess_input; use simple or complex"
        )
    prepare = registry.model(config.model).preprocess(config)  # type: ignore[misc]
    if config.augmentation == "simple":
        return prepare, prepare
    if config.augmentation == "crop_flip":  # on the backbone's input: the shifted-in border is 0 there
        return compose(prepare, *_crop_flip_ops(config, config.input_size)), prepare
    # Flips and zoom commute with preprocess_input (a per-channel affine map), so they can follow it.
    return compose(prepare, *_random_ops(config)), prepare
