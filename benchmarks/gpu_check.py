#!/usr/bin/env python
"""GPU check: 4 trials sharing one GPU (0.25 each) against 1 trial holding the whole GPU.

    python benchmarks/gpu_check.py                 # on a GPU machine: <= 8 minutes
    python benchmarks/gpu_check.py --quick         # the CPU dry run's size (what the smoke test runs)

Method. Two Tune runs of the real trainable (trainables.trainable.train_trial, wrapped to log each
trial's GPU figures), one after the other in one embedded Ray: the ConvNet (BN after ReLU, `simple`,
batch 32, SGD 0.01: the reference cell) on CIFAR-100 classes 0..24 from ../shared/data (or --data-dir),
`--epochs` epochs per trial, seeds 0..3:
- shared: 4 trials at once, each `--gpus-per-trial 0.25` (TensorFlow memory-limited to its share,
  trainables.runtime.gpu_memory_limit_mb);
- whole: 1 trial holding the GPU (memory growth).
Each trial uses `--cpus` CPUs (TensorFlow threads). Reported per run: aggregate training images/s (the
sum over concurrent trials of training images / the median epoch time, first epoch, with its tracing,
left out); per trial: its peak GPU memory (tf.config.experimental.get_memory_info) against its limit,
and any error, out-of-memory errors named. The shared run's aggregate against the whole-GPU trial's is
the figure: what packing 4 small trials on a GPU buys.

Without a GPU the script says so and runs the same code on the CPU at a degraded size (2 trials at a
time against 1, digits or a CIFAR slice, 1 epoch), which checks the script, not the GPU; its CSV says
`gpu = False`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "gpu_check"
CELL = {
    "model": "convnet",
    "bn_position": "after_relu",
    "augmentation": "simple",
    "optimizer": "sgd",
    "learning_rate": 0.01,
    "batch_size": 32,
}


def gpu_info() -> dict | None:
    """Name and memory of GPU 0 per nvidia-smi, or None where there is no GPU."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,count", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, total, count = (v.strip() for v in out[0].split(","))
    return {"gpu_name": name, "gpu_total_mb": int(total), "gpus": int(count)}


def instrumented(params: dict, data, log: str, cpus: float = 1, gpus: float = 0) -> None:
    """train_trial, then a log line: the trial's GPU memory limit and peak, its epoch times, any error."""
    from ray import tune

    from trainables import callbacks, runtime, trainable

    epochs: list[dict] = []
    real_report = tune.report

    def report(metrics, checkpoint=None):
        epochs.append({k: metrics.get(k) for k in ("epoch", "epoch_time_s", "error")})
        return real_report(metrics, checkpoint=checkpoint)

    callbacks.tune.report = report  # benchmark-only instrumentation of what EpochReporter reports
    error = None
    try:
        trainable.train_trial(params, data, cpus, gpus)
    except BaseException as e:
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        raise
    finally:
        callbacks.tune.report = real_report
        import tensorflow as tf

        peak_mb = None
        if tf.config.list_logical_devices("GPU"):
            peak_mb = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        configured = next(iter(runtime._CONFIGURED.values()), {})  # what configure_tensorflow set
        errors = [e["error"] for e in epochs if e.get("error")]
        record = {
            "seed": params["seed"],
            "pid": os.getpid(),
            "gpu_share": gpus,
            "limit_mb": configured.get("gpu_memory_limit_mb"),
            "peak_mb": peak_mb,
            "epochs": epochs,
            "error": error or (errors[0] if errors else None),
            "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")


def run(
    label: str, trials: int, share: float, cpus: float, epochs: int, dataset: str, data, work: Path, use_gpu: bool
) -> list[dict]:
    from ray import tune

    from tuning.optuna_search import fixed_configs_search

    log = work / f"{label}.jsonl"
    configs = [{**CELL, "dataset": dataset, "max_epochs": epochs, "seed": s} for s in range(trials)]
    search_alg, param_space = fixed_configs_search(configs)
    resources = {"cpu": cpus, "gpu": share if use_gpu else 0}
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(instrumented, data=data, log=str(log), cpus=cpus, gpus=share if use_gpu else 0),
            resources,
        ),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy", mode="max", num_samples=trials, search_alg=search_alg, reuse_actors=False
        ),
        run_config=tune.RunConfig(
            name=label,
            storage_path=str(work),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for r in grid:
        if r.error and not any(row.get("error") for row in rows):
            rows.append({"seed": None, "error": str(r.error).strip().splitlines()[0][:300], "epochs": []})
    for row in rows:
        row["run"], row["wall_s"] = label, wall
    return rows


def summarize(rows: list[dict], train_images: int) -> dict:
    times = [
        statistics.median([e["epoch_time_s"] for e in r["epochs"][1:] or r["epochs"] if e.get("epoch_time_s")])
        for r in rows
        if r.get("epochs")
    ]
    return {
        "trials": len(rows),
        "aggregate_img_per_s": round(sum(train_images / t for t in times), 1),
        "median_epoch_s": round(statistics.median(times), 2) if times else None,
        "errors": sum(1 for r in rows if r.get("error")),
        "oom": sum(
            1
            for r in rows
            if "memory" in str(r.get("error") or "").lower() or "ResourceExhausted" in str(r.get("error") or "")
        ),
        "wall_s": round(rows[0]["wall_s"], 1) if rows else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the CPU dry run's size (digits), even on a GPU")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3 on a GPU, 1 on the CPU)")
    p.add_argument("--cpus", type=float, default=None, help="CPUs per trial (default 3 on a GPU, 1 on the CPU)")
    p.add_argument("--data-dir", default=None, help="folder holding cifar-100-python (default ../shared/data)")
    p.add_argument("--cpu-images", type=int, default=2000, help="CPU dry run: training images of the slice")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    gpu = gpu_info()
    use_gpu = gpu is not None and not args.quick
    if gpu is None:
        print(
            "gpu_check: no GPU on this machine (no nvidia-smi or no device): running the CPU dry run "
            "(2 trials at a time against 1, degraded size); these figures are not GPU figures"
        )
    epochs = args.epochs or (3 if use_gpu else 1)
    cpus = args.cpus or (3 if use_gpu else 1)
    data_dir = Path(args.data_dir) if args.data_dir else _common.SHARED_DATA
    if use_gpu and not (data_dir / "cifar-100-python" / "train").is_file():
        print(
            f"gpu_check: error: CIFAR-100 not found under {data_dir} (cifar-100-python/train); pass --data-dir FOLDER",
            file=sys.stderr,
        )
        return 2
    work = _common.scratch(NAME, args.workdir)
    from trainables.data import ImageDataset, load_dataset

    if use_gpu or (not args.quick and (data_dir / "cifar-100-python" / "train").is_file()):
        dataset, data = "cifar100_25", load_dataset("cifar100_25", str(data_dir))
    else:
        dataset, data = "digits", load_dataset("digits", None)
    if not use_gpu:  # degraded: a slice, so the dry run takes a minute or two on a loaded CPU
        n = args.cpu_images
        data = ImageDataset(
            data.name,
            data.x_train[:n],
            data.y_train[:n],
            data.x_test[: n // 5],
            data.y_test[: n // 5],
            data.num_classes,
        )
    from trainables.data import validation_split

    train_images = len(validation_split(data.y_train, 0)[0])
    os.environ.setdefault("KERAS_HPO_CACHE", str(work / "node-cache"))
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    before = _common.machine()
    _common.start_ray(**({} if use_gpu else {"num_cpus": 2 * cpus}))
    try:
        shared_n, share = (4, 0.25) if use_gpu else (2, 0.5)
        whole = run("whole", 1, 1.0, cpus, epochs, dataset, data, work, use_gpu)
        shared = run("shared", shared_n, share, cpus, epochs, dataset, data, work, use_gpu)
    finally:
        ray.shutdown()
    s_whole, s_shared = summarize(whole, train_images), summarize(shared, train_images)
    info = {
        "gpu": use_gpu,
        **(gpu or {"gpu_name": None, "gpu_total_mb": None}),
        "dataset": dataset,
        "train_images": train_images,
        "epochs": epochs,
        "cpus_per_trial": cpus,
        "loadavg_1m": before["loadavg_1m"],
        "date_utc": before["date_utc"],
    }
    trials = pd.DataFrame(
        [
            {
                **info,
                "run": r["run"],
                "gpu_share": r.get("gpu_share"),
                "seed": r.get("seed"),
                "pid": r.get("pid"),
                "limit_mb": r.get("limit_mb"),
                "peak_mb": None if r.get("peak_mb") is None else round(r["peak_mb"], 1),
                "within_limit": None
                if not (r.get("limit_mb") and r.get("peak_mb") is not None)
                else bool(r["peak_mb"] <= r["limit_mb"]),
                "epochs_done": len([e for e in r.get("epochs", []) if not e.get("error")]),
                "error": r.get("error"),
            }
            for r in whole + shared
        ]
    )
    summary = pd.DataFrame([{**info, "run": "whole", **s_whole}, {**info, "run": "shared", **s_shared}])
    summary["shared_over_whole"] = (
        round(s_shared["aggregate_img_per_s"] / s_whole["aggregate_img_per_s"], 2)
        if s_whole["aggregate_img_per_s"]
        else None
    )
    out = Path(args.out) if args.out else None
    _common.emit(NAME if use_gpu else f"{NAME}_cpu_dry_run", summary, out, "GPU check: shared vs whole GPU")
    trials_out = (
        out.with_name(out.stem + "_trials.csv")
        if out
        else _common.RESULTS / f"{NAME if use_gpu else NAME + '_cpu_dry_run'}_trials.csv"
    )
    trials.to_csv(trials_out, index=False)
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(
            trials[
                ["run", "gpu_share", "seed", "limit_mb", "peak_mb", "within_limit", "epochs_done", "error"]
            ].to_string(index=False)
        )
    print(f"-> {trials_out}")
    return 1 if s_whole["errors"] + s_shared["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
