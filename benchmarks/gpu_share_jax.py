#!/usr/bin/env python
"""GPU sharing without TensorFlow: the project's ConvNet on Keras 3's JAX backend, N processes (default 4) at
1/N of the GPU each against 1 process holding the whole GPU.

    python benchmarks/gpu_share_jax.py                   # on a GPU machine with jax + keras: ~3 minutes
    KERAS_BACKEND=tensorflow python benchmarks/gpu_share_jax.py --quick   # a CPU dry run of the script

Why it exists. `gpu_check.py` is the real check (Ray Tune trials of the real trainable, TensorFlow
memory-limited to each trial's share). The GPU machine this project was lent has PyTorch and JAX but
neither TensorFlow nor Ray and reaches no package registry; their wheels are far over what a call may
carry (64 MiB). Keras 3 with JAX fits (keras, namex, optree: 3 MB), and the models are plain Keras, so
this measures the same physical question on the same network: does packing 4 small trials on one GPU
raise the aggregate images/s, and does each stay inside a quarter of the memory?

Method. Each trial is a process (as a Ray worker is): the reference ConvNet cell (BN after ReLU, SGD
0.01, batch 32) built by the project's model registry, `--images` synthetic CIFAR-shaped images
(32x32x3 uint8, 25 classes; throughput does not depend on pixel values), `--epochs` epochs of
`model.fit`. Memory share: XLA_PYTHON_CLIENT_MEM_FRACTION (JAX preallocates that fraction and never
grows past it: the analogue of TensorFlow's logical-device memory limit). Per trial: median epoch time
after the first (which holds XLA compilation), images/s, peak bytes in use (device.memory_stats) against
the limit, and any error (out-of-memory named). Aggregate images/s of the shared run (sum over the 4)
against the whole-GPU trial is the figure. Writes benchmarks/results/gpu_share_jax.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL = {"model": "convnet", "bn_position": "after_relu", "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32}


def trial(share: float, seed: int, epochs: int, images: int) -> dict:
    """One trial in this process; returns its figures (called in a child process)."""
    import keras
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from trainables.architectures import build_model, build_optimizer
    from trainables.config import TrialConfig

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8).astype("float32") / 255.0
    y = rng.integers(0, 25, size=images)
    config = TrialConfig.from_params({**CELL, "seed": seed})
    model = build_model(config, (32, 32, 3), 25)
    model.compile(optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            times.append(time.perf_counter() - self.t0)

    row: dict = {"share": share, "seed": seed, "backend": keras.backend.backend(), "error": ""}
    try:
        model.fit(x, y, batch_size=CELL["batch_size"], epochs=epochs, verbose=0, callbacks=[Timer()])
    except Exception as exc:  # noqa: BLE001 - the figure to report is the error itself (OOM or not)
        row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        row["oom"] = "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()
    steady = times[1:] or times
    row.update(epochs_done=len(times), first_epoch_s=times[0] if times else None)
    row["median_epoch_s"] = statistics.median(steady) if steady else None
    row["images_per_s"] = images / row["median_epoch_s"] if steady else None
    row.update(memory_stats())
    return row


def memory_stats() -> dict:
    """Peak and limit of device 0's allocator (JAX), or nothing on other backends."""
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return {
            "device": str(jax.devices()[0].device_kind),
            "peak_mb": stats.get("peak_bytes_in_use", 0) / 2**20,
            "limit_mb": stats.get("bytes_limit", 0) / 2**20,
        }
    except Exception:  # noqa: BLE001 - no JAX, or a backend without stats: report none
        return {"device": "cpu", "peak_mb": None, "limit_mb": None}


def run(share: float, seeds: list[int], epochs: int, images: int) -> list[dict]:
    """len(seeds) trials at once, each a process with `share` of the GPU's memory."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{share:.3f}"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--trial", str(share), str(s), str(epochs), str(images)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in seeds
    ]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        rows.append(json.loads(lines[-1]) if lines else {"share": share, "error": f"exit {p.returncode}"})
    for r in rows:
        r["concurrent"] = len(seeds)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 vs 2 trials, 512 images, 2 epochs (a dry run)")
    ap.add_argument("--trials", type=int, default=4, help="concurrent trials of the shared run, 1/N of the GPU each")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--images", type=int, default=12_500, help="training images (CIFAR-100 0..24 has 12,500)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_share_jax.csv"))
    ap.add_argument("--trial", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trial:
        share, seed, epochs, images = float(args.trial[0]), int(args.trial[1]), int(args.trial[2]), int(args.trial[3])
        print(json.dumps(trial(share, seed, epochs, images)), flush=True)
        return
    import pandas as pd

    n, epochs, images = (2, 2, 512) if args.quick else (args.trials, args.epochs, args.images)
    # Whole: one trial may take 90 % (JAX's default preallocation is 75 %); shared: a quarter each,
    # less the few percent the CUDA contexts of 4 processes take outside the allocator.
    whole = run(0.90, [0], epochs, images)
    shared = run(round(0.95 / n, 3), list(range(n)), epochs, images)
    df = pd.DataFrame(whole + shared)
    df["run"] = ["whole"] * len(whole) + ["shared"] * len(shared)
    df["within_limit"] = df["peak_mb"] <= df["limit_mb"]
    agg = df.groupby("run")["images_per_s"].sum()
    df["aggregate_images_per_s"] = df["run"].map(agg)
    df["shared_over_whole"] = agg.get("shared", float("nan")) / agg.get("whole", float("nan"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    cols = ["run", "share", "seed", "images_per_s", "first_epoch_s", "median_epoch_s", "peak_mb", "limit_mb"]
    print(df[[*cols, "error"]].to_string(index=False))
    print(f"== aggregate images/s: whole {agg.get('whole', 0):.0f}, shared x{n} {agg.get('shared', 0):.0f}")
    print(f"== shared/whole {df['shared_over_whole'].iloc[0]:.2f}; errors: {int((df['error'] != '').sum())}")


if __name__ == "__main__":
    main()
