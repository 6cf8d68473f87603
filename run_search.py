#!/usr/bin/env python
"""Run a hyperparameter search over a Keras CNN: parse, build the Tuner, fit, export tables, print the best.

    python run_search.py --space batchnorm --dataset digits --num-samples 6 --max-epochs 3

Exit codes: 0 done; 1 every trial failed; 2 bad usage or input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from analysis import storage
from analysis.tables import export_tables
from search_spaces import SPACES, SearchSpace
from trainables.config import DATASETS

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
METRIC, MODE = "val_accuracy", "max"
PROJECT_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """Bad usage or input: printed as one line, exit 2, no traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", required=True, help=f"search space, one of: {', '.join(sorted(SPACES))}")
    p.add_argument("--dataset", choices=DATASETS, help="dataset (default: the space's own)")
    p.add_argument("--data-dir", help="folder holding the dataset in its standard format "
                                      "(default: Keras' cache, downloading if needed)")
    p.add_argument("--num-samples", type=int, help="trials to sample (default: the space's own)")
    p.add_argument("--max-epochs", type=int, help="full budget of a trial, ASHA's max_t (default: the space's)")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    p.add_argument("--search", choices=("optuna", "random"), default="optuna")
    p.add_argument("--seed", type=int, default=0, help="seeds the searcher and every trial")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial, fractional allowed (default: the space's own on a GPU cluster, else 0)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as resources allow)")
    p.add_argument("--address", default=None, help="join a Ray cluster ('auto', 'ray://host:10001'); "
                                                    "default: start an embedded Ray")
    p.add_argument("--storage-path", default="./results", help="local folder, NFS, or s3:// / gs:// URI")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="endpoint of an S3-compatible store (MinIO, Ceph, ...) for an s3:// --storage-path, "
                        "e.g. http://minio:9000; sets AWS_ENDPOINT_URL for the driver and every trial")
    p.add_argument("--name", default=None, help="experiment name (default: <space>-<UTC timestamp>)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more progress output")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less progress output")
    return p.parse_args(argv)


def resolve_space(args: argparse.Namespace) -> SearchSpace:
    if args.space not in SPACES:
        raise UsageError(f"--space {args.space!r} is unknown; known spaces: {', '.join(sorted(SPACES))}")
    space = SPACES[args.space]
    for flag in ("num_samples", "max_epochs", "max_concurrent"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UsageError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    return space


def provenance() -> dict[str, Any]:
    versions = {}
    for pkg in ("tensorflow", "keras", "ray", "optuna"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_DIR,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    return {"git_sha": sha, "versions": versions}


def _define_with_fixed(trial: Any, space: SearchSpace, fixed: dict[str, Any]) -> dict[str, Any]:
    """The space's define-by-run plus the run's fixed knobs (dataset, seed, budget)."""
    return {**(space.define(trial) or {}), **fixed}


def build_searcher(args: argparse.Namespace, space: SearchSpace, fixed: dict[str, Any]):  # noqa: ANN201
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    sampler = (optuna.samplers.TPESampler(seed=args.seed) if args.search == "optuna"
               else optuna.samplers.RandomSampler(seed=args.seed))
    return OptunaSearch(space=functools.partial(_define_with_fixed, space=space, fixed=fixed),
                        metric=METRIC, mode=MODE, sampler=sampler)


def trial_dirname(trial: Any) -> str:
    """Trial folders named by trial id alone: short, unique, and what the tables call them."""
    return str(trial.trial_id)


def build_scheduler(args: argparse.Namespace, max_epochs: int):  # noqa: ANN201
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if args.scheduler == "fifo":
        return FIFOScheduler()
    # Rungs at 1, 3, 9, ... epochs: a third of the trials go on at each rung.
    return ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=1, reduction_factor=3)


def load_data(args: argparse.Namespace, dataset: str):  # noqa: ANN201
    from trainables.data import DatasetUnavailable, load_dataset

    try:
        return load_dataset(dataset, args.data_dir)
    except DatasetUnavailable as e:
        raise UsageError(f"dataset {dataset!r} is unavailable: {e}. Point --data-dir at a folder holding it "
                         "in its standard format, or run offline with --dataset digits") from None


def experiment_location(args: argparse.Namespace, name: str) -> tuple[Any, str, str]:
    """(filesystem, experiment path on it, experiment path/URI as the user sees it)."""
    base = args.storage_path
    if storage.is_uri(base):
        uri = f"{base.rstrip('/')}/{name}"
        fs, path = storage.resolve(uri)
        return fs, path, uri
    fs, path = storage.resolve(Path(base) / name)
    return fs, path, path


def use_s3_endpoint(args: argparse.Namespace) -> None:
    """Point pyarrow.fs (ours and Ray Tune's) at a non-AWS S3 store through the AWS SDK's own variable,
    which trial workers of an embedded Ray inherit and a cluster's get through the runtime env."""
    if args.s3_endpoint is None:
        return
    if not str(args.storage_path).startswith("s3://"):
        raise UsageError(f"--s3-endpoint needs an s3:// --storage-path, got {args.storage_path!r}")
    if not args.s3_endpoint.startswith(("http://", "https://")):
        raise UsageError(f"--s3-endpoint must be an http:// or https:// URL, got {args.s3_endpoint!r}")
    os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint


# Left out of the code shipped to a cluster's workers: environments, results, caches.
WORKING_DIR_EXCLUDES = [".venv", ".git", "results", "**/__pycache__", "*.egg-info", ".pytest_cache"]


def connect_ray(args: argparse.Namespace) -> None:  # noqa: ANN201
    """Join the cluster at --address, or start an embedded Ray (address="local": always a fresh one,
    never a cluster some other process started on this host)."""
    import ray

    options: dict[str, Any] = {"log_to_driver": args.verbose > 0, "logging_level": "WARNING",
                               "configure_logging": True}
    if args.address is None:
        ray.init(address="local", include_dashboard=False, **options)
        return
    # Other nodes have neither this checkout nor the driver's environment: ship the project's code
    # (the packages trials import) and the S3 endpoint. Credentials stay with the nodes' own
    # environment or instance roles; they are not copied into the cluster.
    env_vars = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL",) if k in os.environ}
    runtime_env: dict[str, Any] = {"working_dir": str(PROJECT_DIR), "excludes": WORKING_DIR_EXCLUDES}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    try:
        ray.init(address=args.address, runtime_env=runtime_env, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"--address {args.address!r}: cannot join a Ray cluster there ({e}). "
                         "Start one with `ray start --head`, or leave --address out for an embedded Ray") from None


def trial_gpus(requested: float | None, space_default: float, cluster_gpus: float) -> float:
    """GPUs per trial: the flag when given; else the space's default, but only where the cluster
    has GPUs, so a GPU-minded space (transfer learning) still runs on a CPU-only machine."""
    if requested is not None:
        return requested
    return space_default if cluster_gpus > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"run_search.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    space = resolve_space(args)
    dataset_name = args.dataset or space.dataset
    max_epochs = args.max_epochs or space.max_epochs
    num_samples = args.num_samples or space.num_samples
    use_s3_endpoint(args)
    name = args.name or f"{space.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    fs, exp_path, exp_uri = experiment_location(args, name)
    if storage.exists(fs, exp_path):
        raise UsageError(f"experiment {exp_uri} already exists; pick another --name")
    data = load_data(args, dataset_name)

    import ray
    from ray import tune

    from trainables.trainable import train_trial

    connect_ray(args)
    gpus = trial_gpus(args.gpus_per_trial, space.gpus_per_trial, ray.cluster_resources().get("GPU", 0.0))
    meta = {
        "experiment": name, "space": space.name, "dataset": dataset_name, "max_epochs": max_epochs,
        "num_samples": num_samples, "seed": args.seed, "scheduler": args.scheduler, "search": args.search,
        "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": gpus, "argv": sys.argv[1:],
        "created_at": dt.datetime.now(dt.UTC).isoformat(), **provenance(),
    }
    storage.write_text(fs, storage.join(exp_path, storage.EXPERIMENT_FILE), _json(meta))
    fixed = {"dataset": dataset_name, "seed": args.seed, "max_epochs": max_epochs}
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, cpus=args.cpus_per_trial, gpus=gpus),
        {"cpu": args.cpus_per_trial, "gpu": gpus})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=num_samples,
            search_alg=build_searcher(args, space, fixed), scheduler=build_scheduler(args, max_epochs),
            max_concurrent_trials=args.max_concurrent,
            trial_dirname_creator=trial_dirname,
            reuse_actors=False,  # one process per trial: a finished trial returns its GPU memory
        ),
        run_config=tune.RunConfig(
            name="search", storage_path=exp_uri if storage.is_uri(exp_uri) else exp_path,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=2),
            verbose=max(0, min(3, 1 + args.verbose - args.quiet)),
        ),
    )
    tuner.fit()
    folder, trials, _ = export_tables(exp_uri)
    return summarize(trials.to_pandas(), folder if not storage.is_uri(exp_uri) else f"{exp_uri}/tables")


def summarize(trials: Any, folder: str) -> int:
    ok = trials[trials["status"] != "error"]
    print(f"\n{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items()))
    if ok.empty:
        print("every trial failed; errors:\n" + "\n".join(f"  {t}: {e}" for t, e in
                                                          zip(trials["trial_id"], trials["error"])))
        print(f"tables: {folder}")
        return EXIT_ALL_FAILED
    full = ok[ok["status"] == "completed"]
    pool = full if not full.empty else ok
    best = pool.sort_values("best_val_accuracy", ascending=False).iloc[0]
    budget = "full budget" if not full.empty else "no trial reached the full budget"
    print(f"best trial ({budget}): {best['trial_id']}  val_accuracy={best['best_val_accuracy']:.4f}"
          + (f"  test_accuracy={best['test_accuracy']:.4f}" if best["test_accuracy"] == best["test_accuracy"]
             and best["test_accuracy"] is not None else ""))
    print(f"tables: {folder}/trials.parquet, {folder}/epochs.parquet")
    return EXIT_OK


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)


if __name__ == "__main__":
    # Tune warns when per-epoch checkpoints snapshot the experiment often; that is by design here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    sys.exit(main())
