#!/usr/bin/env python
"""Input pipeline: training images per second of the simple, complex, crop_flip and whitening tf.data pipelines
against a per-image NumPy augmentation loop (how the legacy Keras ImageDataGenerator worked), and
BaseNet's training speed on the real pipeline against pre-built in-memory tensors.

    .venv/bin/python benchmarks/input_pipeline.py            # CIFAR-100 classes 0..24 (or digits)
    .venv/bin/python benchmarks/input_pipeline.py --quick    # digits, small subsets

The pipelines are the trial's own: trainables.pipeline.make_dataset over trainables.augment.policy_inputs
(statistics, and for `whitening` the whitened dataset, computed beforehand into a scratch cache, as a
trial finds them cached). One warm-up pass (tracing), then one timed pass over the training split.

The legacy loop does per image what ImageDataGenerator did: float conversion, random horizontal and
vertical flip (np.flip), random zoom by scipy.ndimage.affine_transform per channel (bilinear,
reflect), feature-wise centring and std scaling, and for `whitening` the ZCA as one matrix-vector
product per image (`flat @ zca`), then np.stack into a batch. It runs on a subset (--legacy-images).

The real legacy baseline: Keras 2's ImageDataGenerator (the `tf-keras` package, the `bench` extra of
pyproject.toml) with the reference study's options: `simple` rescale 1/255; `complex` horizontal and
vertical flips, zoom_range 0.2, feature-wise centring and std normalisation; `whitening` feature-wise
centring and std normalisation plus ZCA (zca_epsilon as the config's). It runs in its own process
(tf_keras and Keras 3 are not imported into one process), fitted untimed on the legacy subset, then
`flow(..., batch_size)` is timed over the same number of images as the NumPy loop. Speedups are
reported against both; the targets are against ImageDataGenerator (`speedup_idg`).

Training speed: BaseNet model.fit on tf.data.from_tensor_slices of pre-normalised float32 arrays
(batch 32, prefetch) against model.fit on the real pipeline; the second epoch of each is timed.
TensorFlow runs with 1 op thread, as a trial with --cpus-per-trial 1.
Targets: complex and crop_flip >= 8x and whitening >= 16x ImageDataGenerator; training on the pipeline
>= 0.95x the speed on pre-built tensors.

Side by side, the same pipeline with the batch gather as it was before issue 22 (`numpy_gather_dataset`:
NumPy through tf.numpy_function) against the gather inside TensorFlow (`gather_speedup`). The
`crop_flip` baselines: the legacy loop pads, crops and flips per image; ImageDataGenerator shifts by
up to an eighth of the side in whole pixels with zeros shifted in, flips left-right, and normalises.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "input_pipeline"
POLICIES = ("simple", "complex", "crop_flip", "whitening")
TARGET_SPEEDUP = {"simple": None, "complex": 8.0, "crop_flip": 8.0, "whitening": 16.0}


def legacy_batches(
    x: np.ndarray,
    policy: str,
    stats: dict[str, np.ndarray],
    batch_size: int,
    zoom_range: float,
    rng: np.random.Generator,
):
    """Yield float32 batches made one image at a time, as keras' legacy ImageDataGenerator did."""
    from scipy import ndimage

    h, w, c = x.shape[1:]
    batch = []
    for img in x:
        img = img.astype(np.float32)
        if policy == "simple":
            img = img / 255.0
        else:
            if policy == "crop_flip":  # pad by an eighth of the side, crop back at a random offset, flip
                pad = max(1, h // 8)
                dy, dx = rng.integers(-pad, pad + 1, 2)
                padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
                img = padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
                if rng.random() < 0.5:
                    img = img[:, ::-1]
            if policy == "complex":
                if rng.random() < 0.5:
                    img = img[:, ::-1]
                if rng.random() < 0.5:
                    img = img[::-1]
                z = rng.uniform(1 - zoom_range, 1 + zoom_range)
                # Zoom about the centre: output pixel o samples input z * (o - centre) + centre.
                matrix = np.diag([z, z])
                offset = np.array([(h - 1) / 2, (w - 1) / 2]) * (1 - z)
                img = np.stack(
                    [
                        ndimage.affine_transform(img[..., ch], matrix, offset, order=1, mode="reflect")
                        for ch in range(c)
                    ],
                    axis=-1,
                )
            img = (img - stats["mean"].astype(np.float32)) / stats["std"].astype(np.float32)
            if policy == "whitening":
                img = (img.reshape(-1) @ stats["zca"]).reshape(h, w, c)
        batch.append(img)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


KERAS2_WORKER = """
import json, sys, time
import numpy as np
from tf_keras.preprocessing.image import ImageDataGenerator
policy, path = sys.argv[1], sys.argv[2]
batch_size, zoom, epsilon = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
x = np.load(path).astype("float32")
y = np.zeros(len(x), dtype="int32")
if policy == "simple":
    gen = ImageDataGenerator(rescale=1.0 / 255)
elif policy == "complex":
    gen = ImageDataGenerator(horizontal_flip=True, vertical_flip=True, zoom_range=zoom,
                             featurewise_center=True, featurewise_std_normalization=True)
elif policy == "crop_flip":  # shifts of up to an eighth of the side in whole pixels, zeros shifted in
    shift = max(1, x.shape[1] // 8)
    gen = ImageDataGenerator(width_shift_range=shift, height_shift_range=shift, fill_mode="constant", cval=0.0,
                             horizontal_flip=True, featurewise_center=True, featurewise_std_normalization=True)
else:
    gen = ImageDataGenerator(featurewise_center=True, featurewise_std_normalization=True,
                             zca_whitening=True, zca_epsilon=epsilon)
if policy != "simple":
    gen.fit(x)  # untimed, as our statistics are cached
flow = gen.flow(x, y, batch_size=batch_size, shuffle=True, seed=0)
next(flow)  # warm-up
seen, t0 = 0, time.perf_counter()
for _ in range(len(flow)):
    images, _ = next(flow)
    seen += len(images)
print(json.dumps({"images": seen, "seconds": time.perf_counter() - t0}))
"""


def keras2_baseline(policy: str, subset: np.ndarray, batch_size: int, zoom: float, epsilon: float) -> float:
    """Images per second of Keras 2's ImageDataGenerator on `subset`, in its own process; NaN (with a
    message) when tf-keras is not installed."""
    import json
    import os
    import subprocess

    with tempfile.TemporaryDirectory(prefix="idg-") as folder:
        path = Path(folder) / "x.npy"
        np.save(path, subset)
        proc = subprocess.run(
            [sys.executable, "-c", KERAS2_WORKER, policy, str(path), str(batch_size), str(zoom), str(epsilon)],
            capture_output=True,
            text=True,
            timeout=1800,
            env={
                **os.environ,
                "CUDA_VISIBLE_DEVICES": "",
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            },
        )
    if proc.returncode != 0:
        print(
            f"ImageDataGenerator baseline unavailable ({proc.stderr.strip().splitlines()[-1:]}); "
            "install the bench extra: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return float("nan")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["images"] / out["seconds"]


def time_pass(ds) -> tuple[int, float]:
    """(images, seconds) of one full pass, after a warm-up pass that traces the graph."""
    for _ in ds:
        pass
    n, t0 = 0, time.perf_counter()
    for images, _labels in ds:
        n += int(images.shape[0])
    return n, time.perf_counter() - t0


def numpy_gather_dataset(x, y, indices, batch_size, transform, shuffle_seed):
    """The pipeline as it was before issue 22, for the side-by-side figure: the same index stream and
    transforms, each batch gathered by NumPy through tf.numpy_function (one Python call per batch, under
    the GIL)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    ds = ds.shuffle(len(indices), seed=shuffle_seed, reshuffle_each_iteration=True).batch(batch_size)

    def gather_op(idx):
        images, labels = tf.numpy_function(
            lambda i: (x[i], y[i].astype(np.int32)), [idx], (tf.as_dtype(x.dtype), tf.int32), stateful=False
        )
        images.set_shape((None, *x.shape[1:]))
        labels.set_shape((None,))
        return images, labels

    ds = ds.map(gather_op, num_parallel_calls=tf.data.AUTOTUNE)
    if getattr(transform, "seeded", False):
        seeds = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, seed: (transform(batch[0], seed), batch[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        ds = ds.map(lambda images, labels: (transform(images), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_speed(model_fn, ds, epochs: int = 2) -> float:
    """Images per second of the last of `epochs` model.fit epochs."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.last = time.perf_counter() - self.t0

    clock = Clock()
    model = model_fn()
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[clock])
    images = sum(int(b[0].shape[0]) for b in ds)
    return images / clock.last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, small subsets (a smoke run)")
    p.add_argument("--dataset", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--legacy-images", type=int, default=None, help="images the legacy loop runs (default 1500)")
    p.add_argument("--train-images", type=int, default=None, help="images per fit epoch (default: all)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from trainables.runtime import configure_tensorflow

    configure_tensorflow(1)
    import keras
    import tensorflow as tf

    from trainables.architectures import build_model, build_optimizer
    from trainables.augment import channel_stats, policy_inputs, zca_stats
    from trainables.config import TrialConfig
    from trainables.data import validation_split
    from trainables.pipeline import make_dataset

    dataset, data_dir = _common.pick_dataset(args.quick, args.dataset)
    data = _common.load(dataset, data_dir)
    info = _common.machine()
    train_idx, _ = validation_split(data.y_train, 0)
    if args.train_images or args.quick:
        train_idx = train_idx[: args.train_images or 256]
    legacy_n = min(args.legacy_images or (64 if args.quick else 1500), len(train_idx))
    cache = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    rows = []
    fit_rows = []
    for policy in POLICIES:
        config = TrialConfig(model="basenet", dataset=dataset, augmentation=policy, batch_size=args.batch_size)
        # The trial's own inputs: for whitening, the dataset whitened once (cached) and gathered.
        inputs = policy_inputs(config, data, train_idx, cache_dir=cache)
        train_tf, eval_tf = inputs.train_transform, inputs.eval_transform
        ds = make_dataset(inputs.x_train, data.y_train, train_idx, config.batch_size, train_tf, shuffle_seed=0)
        n, secs = time_pass(ds)
        pipe_ips = n / secs
        old = numpy_gather_dataset(inputs.x_train, data.y_train, train_idx, config.batch_size, train_tf, 0)
        old_n, old_secs = time_pass(old)
        old_ips = old_n / old_secs

        stats = {}
        if policy != "simple":
            ch = channel_stats(data, train_idx, cache).arrays
            stats = {"mean": ch["mean"], "std": ch["std"]}
        if policy == "whitening":
            # Fitting is untimed on both sides (ours is cached): the legacy loop applies a dense
            # (H*W*C)^2 float32 matrix per image after normalising, the cost ImageDataGenerator paid.
            stats["zca"] = zca_stats(data, train_idx, config.zca_epsilon, cache).arrays["matrix"]
        rng = np.random.default_rng(0)
        subset = data.x_train[train_idx[:legacy_n]]
        t0 = time.perf_counter()
        seen = sum(len(b) for b in legacy_batches(subset, policy, stats, config.batch_size, config.zoom_range, rng))
        legacy_ips = seen / (time.perf_counter() - t0)
        idg_ips = keras2_baseline(policy, subset, config.batch_size, config.zoom_range, config.zca_epsilon)
        target = TARGET_SPEEDUP[policy]
        rows.append(
            {
                "policy": policy,
                "dataset": dataset,
                "batch_size": config.batch_size,
                "pipeline_images": n,
                "pipeline_img_per_s": round(pipe_ips, 1),
                "numpy_gather_img_per_s": round(old_ips, 1),
                "gather_speedup": round(pipe_ips / old_ips, 2),
                "legacy_images": seen,
                "legacy_img_per_s": round(legacy_ips, 1),
                "speedup": round(pipe_ips / legacy_ips, 2),
                "idg_img_per_s": round(idg_ips, 1),
                "speedup_idg": round(pipe_ips / idg_ips, 2),
                "target_speedup": target,
                "met": None if target is None else bool(pipe_ips / idg_ips >= target),
            }
        )

        # Training speed: the real pipeline against pre-normalised in-memory tensors.
        def model_fn(config=config):
            keras.utils.set_random_seed(0)
            model = build_model(config, data.image_shape, data.num_classes)
            model.compile(
                optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
            return model

        prebuilt_x = np.concatenate(
            [
                eval_tf(tf.constant(inputs.x_train[train_idx[i : i + 1024]])).numpy()
                for i in range(0, len(train_idx), 1024)
            ]
        )
        prebuilt = (
            tf.data.Dataset.from_tensor_slices((prebuilt_x, data.y_train[train_idx]))
            .shuffle(len(train_idx), seed=0)
            .batch(config.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        prebuilt_ips = fit_speed(model_fn, prebuilt)
        real_ips = fit_speed(model_fn, ds)
        fit_rows.append(
            {
                "policy": policy,
                "fit_prebuilt_img_per_s": round(prebuilt_ips, 1),
                "fit_pipeline_img_per_s": round(real_ips, 1),
                "fit_ratio": round(real_ips / prebuilt_ips, 3),
                "fit_target": 0.95,
                "fit_met": bool(real_ips / prebuilt_ips >= 0.95),
            }
        )
    frame = pd.DataFrame(rows).merge(pd.DataFrame(fit_rows), on="policy")
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    frame["loadavg_after"] = _common.machine()["loadavg_1m"]
    _common.emit(NAME, frame, args.out, "tf.data pipelines vs per-image NumPy loop; fit speed vs pre-built tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
