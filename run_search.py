#!/usr/bin/env python
"""Run a hyperparameter search over a Keras CNN: parse, build the Tuner, fit, export tables, print the best.

    python run_search.py --space batchnorm --dataset digits --num-samples 6 --max-epochs 3

Exit codes: 0 done; 1 every trial failed; 2 bad usage or input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from analysis import storage
from analysis.tables import CONFIG_VERSION, export_tables
from search_spaces import SPACES, SearchSpace
from trainables.config import DATASETS, TRANSFER_MODELS, TrialConfig

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
METRIC, MODE = "val_accuracy", "max"
PROJECT_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """Bad usage or input: printed as one line, exit 2, no traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", help=f"search space, one of: {', '.join(sorted(SPACES))} "
                                   "(required unless --resume)")
    p.add_argument("--dataset", choices=DATASETS, help="dataset (default: the space's own)")
    p.add_argument("--data-dir", help="folder holding the dataset in its standard format "
                                      "(default: Keras' cache, downloading if needed)")
    p.add_argument("--num-samples", type=int, help="trials to sample (default: the space's own)")
    p.add_argument("--max-epochs", type=int, help="full budget of a trial, ASHA's max_t (default: the space's)")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    p.add_argument("--grace-period", type=int, default=None, metavar="EPOCHS",
                   help="ASHA: epochs before a trial's first judgement (default: the space's own)")
    p.add_argument("--reduction-factor", type=int, default=None, metavar="RF",
                   help="ASHA: each rung keeps the best 1/RF of the trials; rungs at grace*RF^k epochs "
                        "(default: the space's own)")
    p.add_argument("--brackets", type=int, default=None,
                   help="ASHA brackets; bracket s first judges at grace*RF^s, hedging against a misleading "
                        "first rung (default: the space's own)")
    p.add_argument("--stop-on", choices=("last", "best", "ema"), default=None,
                   help="ASHA compares at a rung: the epoch's val_accuracy, the best so far, or an "
                        "exponential mean (weight 1/2 on the newest epoch) (default: the space's own)")
    p.add_argument("--search", choices=("optuna", "random", "grid"), default="optuna",
                   help="Optuna TPE, random, or every cell of the space's grid")
    p.add_argument("--seed", type=int, default=0, help="seeds the searcher and every trial")
    p.add_argument("--repeats", type=int, default=0, metavar="R",
                   help="with --search grid: run every cell R times (seeds S, S+1, ...); with --confirm-top: "
                        "retrain each of the best configs R times")
    p.add_argument("--cells", action="append", default=None, metavar="KNOB=VALUE",
                   help="with --search grid: run only the cells whose KNOB is VALUE (repeatable; all must "
                        "match), e.g. --cells model=basenet")
    p.add_argument("--confirm-top", type=int, default=0, metavar="K",
                   help="after the search, retrain the best K configs --repeats times with new seeds, "
                        "full budget, no early stopping (phase 'confirm')")
    p.add_argument("--patience", type=int, default=0, metavar="EPOCHS",
                   help="within-trial early stopping: epochs without val_loss improvement; 0 = off")
    p.add_argument("--weights", default=None, metavar="imagenet|none|PATH",
                   help="transfer spaces: backbone weights; unset: imagenet")
    p.add_argument("--input-size", type=int, default=None, metavar="PIXELS",
                   help="transfer spaces: image side fed to the backbone; unset: 224")
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
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name after a crash or Ctrl-C, with its stored settings")
    p.add_argument("--max-failures", type=int, default=2,
                   help="retries of a failed trial, each from its last checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                   help="a trial checkpoints every EPOCHS epochs and at its full budget; a killed worker "
                        "loses at most the EPOCHS - 1 epochs since its last checkpoint")
    p.add_argument("--fresh-workers", action="store_true",
                   help="one fresh worker process per trial (returns all its memory, GPU too, when it "
                        "ends); default: reuse a worker for the next trial that asks the same resources")
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


def build_search(args: argparse.Namespace, space: SearchSpace,
                 fixed: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """(search_alg, param_space): Optuna (TPE or random) on the space's define-by-run, learning at
    step = epoch; or, for --search grid, every cell of the space's grid --repeats times."""
    from search_spaces.optuna_search import build_optuna_search, fixed_configs_search, grid_configs

    if args.search == "grid":
        return fixed_configs_search(grid_configs(space, fixed, args.seed, args.repeats, cell_filter(args)))
    return build_optuna_search(space, fixed, metric=METRIC, mode=MODE, seed=args.seed,
                               random=args.search == "random", max_epochs=fixed["max_epochs"]), None


def cell_filter(args: argparse.Namespace) -> dict[str, str]:
    """--cells KNOB=VALUE ... as {knob: value}; a knob that is not a TrialConfig field is refused."""
    from trainables.config import knob_types

    where: dict[str, str] = {}
    for item in getattr(args, "cells", None) or []:
        knob, sep, value = item.partition("=")
        if not sep or knob not in knob_types():
            raise UsageError(f"--cells {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(knob_types())}")
        where[knob] = value
    return where


TRANSFER_ONLY_FLAGS = {"weights": "--weights", "input_size": "--input-size"}


def fixed_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """Knobs the flags fix for every trial (besides dataset, seed, budget)."""
    knobs: dict[str, Any] = {"patience": args.patience} if args.patience else {}
    for knob in TRANSFER_ONLY_FLAGS:
        if getattr(args, knob) is not None:
            knobs[knob] = getattr(args, knob)
    return knobs


def check_search_flags(args: argparse.Namespace, space: SearchSpace, dataset: str, max_epochs: int) -> int:
    """Checks of --search, --repeats, --confirm-top, --patience, --weights, --input-size against the
    space; returns how many trials the search phase runs."""
    for flag in ("repeats", "confirm_top", "patience"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if args.confirm_top and not args.repeats:
        raise UsageError("--confirm-top K needs --repeats R (R >= 1): how often each of the K best configs "
                         "is retrained")
    if getattr(args, "cells", None) and args.search != "grid":
        raise UsageError("--cells selects cells of a grid; add --search grid or drop --cells")
    if args.repeats and not args.confirm_top and args.search != "grid":
        raise UsageError("--repeats R needs --confirm-top K (retrain the K best configs R times) "
                         "or --search grid (run every cell R times)")
    if args.search == "grid":
        if not space.cells():
            with_grid = sorted(name for name, s in SPACES.items() if s.cells())
            raise UsageError(f"--search grid: space {space.name!r} has no grid; spaces with one: "
                             f"{', '.join(with_grid)}; or use --search optuna or random")
        if not space.cells(cell_filter(args)):
            raise UsageError(f"--cells {' '.join(args.cells)}: no cell of space {space.name!r} matches; its cells: "
                             + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in space.cells()))
        if args.num_samples is not None:
            raise UsageError("--num-samples does not apply to --search grid, which runs every cell "
                             "(--repeats times); drop --num-samples")
    examples = space.examples()
    knobs = fixed_knobs(args)
    if not any(e.get("model") in TRANSFER_MODELS for e in examples):
        for knob, flag in TRANSFER_ONLY_FLAGS.items():
            if knob in knobs:
                raise UsageError(f"{flag} applies to transfer-learning spaces only (e.g. --space transfer); "
                                 f"space {space.name!r} trains no backbone; drop {flag}")
    if args.weights is not None:
        from trainables.transfer import WeightsUnavailable, check_weights

        try:
            check_weights(args.weights)
        except WeightsUnavailable as e:
            raise UsageError(str(e)) from None
    for example in examples:  # e.g. --input-size 32 with InceptionResNetV2, which needs 75
        try:
            TrialConfig.from_params({**example, "dataset": dataset, "max_epochs": max_epochs, **knobs})
        except ValueError as e:
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in knobs.items()) or "its defaults"
            raise UsageError(f"space {space.name!r} with {flags}: {e}") from None
    if args.search == "grid":
        return len(space.cells(cell_filter(args))) * max(1, args.repeats)
    return args.num_samples or space.num_samples


def confirm_configs(trials: Any, top: int, repeats: int, max_epochs: int) -> list[dict[str, Any]]:
    """The confirmation stage's trials: the `top` best distinct configs of the search (best validation
    accuracy among the trials at the largest budget any reached), each `repeats` times with seeds no
    search trial used, at the full budget and without early stopping (patience 0)."""
    from trainables.config import knob_types

    search = trials[trials["phase"] == "search"]
    ok = search[search["status"] != "error"]
    if ok.empty:
        return []
    pool = ok[ok["epochs_completed"] == ok["epochs_completed"].max()]
    pool = pool.sort_values(["best_val_accuracy", "trial_id"], ascending=[False, True], na_position="last")
    names = [k for k in knob_types() if k not in ("seed", "max_epochs", "patience")]
    best: list[dict[str, Any]] = []
    for row in pool.to_dict("records"):
        config = TrialConfig.from_params({k: row[k] for k in names}).to_dict()
        if config not in best:  # grid repeats: one config, several seeds
            best.append(config)
    first_seed = int(search["seed"].max()) + 1
    return [{**c, "seed": first_seed + r, "max_epochs": max_epochs, "patience": 0}
            for c in best[:top] for r in range(repeats)]


def run_confirm(args: argparse.Namespace, trials: Any, trainable: Any, fs: Any, exp_path: str,
                exp_uri: str, max_epochs: int) -> None:
    """The second Tune run, in `<experiment>/confirm`: the chosen configs as fixed points, FIFO.
    With --resume, an interrupted confirmation run continues where it stopped."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from search_spaces.optuna_search import fixed_configs_search
    from trainables import tune_settings

    configs = confirm_configs(trials, args.confirm_top, args.repeats, max_epochs)
    if not configs:
        print("confirmation skipped: no search trial finished without error")
        return
    print(f"\nconfirming the best {len(configs) // args.repeats} configs, {args.repeats} seeds each "
          f"(seeds {configs[0]['seed']}..{configs[0]['seed'] + args.repeats - 1}), {max_epochs} epochs")
    root = exp_uri if storage.is_uri(exp_uri) else exp_path
    if args.resume and storage.exists(fs, storage.join(exp_path, "confirm", "tuner.pkl")):
        tuner = tune.Tuner.restore(storage.join(root, "confirm"), trainable=trainable, resume_errored=True)
    else:
        search_alg, param_space = fixed_configs_search(configs)
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, num_samples=len(configs), search_alg=search_alg,
                scheduler=FIFOScheduler(), max_concurrent_trials=args.max_concurrent,
                trial_dirname_creator=trial_dirname, reuse_actors=reuse_workers(args)),
            run_config=tune.RunConfig(
                name="confirm", storage_path=root,
                checkpoint_config=tune_settings.checkpoint_config(), callbacks=tune_settings.result_loggers(),
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                verbose=max(0, min(3, 1 + args.verbose - args.quiet))),
        )
    try:
        grid = tuner.fit()
        if _TERMINATED or search_incomplete(grid, len(configs)):
            raise Interrupted
    except BaseException:
        _export_best_effort(exp_uri)
        raise


def print_confirmed(trials: Any) -> None:
    """Test accuracy of each confirmed config over its seeds."""
    confirm = trials[trials["phase"] == "confirm"]
    if confirm.empty:
        return
    from trainables.config import knob_types

    names = [k for k in knob_types() if k != "seed" and confirm[k].nunique() > 1] or ["model"]
    stats = confirm.groupby(names, dropna=False)["test_accuracy"].agg(["mean", "std", "count"])
    print("confirmed (test accuracy over seeds):\n" + stats.to_string(float_format=lambda v: f"{v:.4f}"))


def reuse_workers(args: argparse.Namespace) -> bool:
    """Tune's actor reuse (DESIGN section 4), unless --fresh-workers: a warm worker skips the process
    start and TensorFlow import; trainables.runtime keeps its settings valid across trials."""
    return not getattr(args, "fresh_workers", False)


def trial_dirname(trial: Any) -> str:
    """Trial folders named by trial id alone: short, unique, and what the tables call them."""
    return str(trial.trial_id)


SCHEDULER_FLAGS = ("grace_period", "reduction_factor", "brackets", "stop_on")


def scheduler_settings(args: argparse.Namespace, space: SearchSpace, max_epochs: int):  # noqa: ANN201
    """ASHA's settings: the space's, with --grace-period/--reduction-factor/--brackets/--stop-on over them."""
    from search_spaces.schedulers import resolve_settings

    given = {k: getattr(args, k, None) for k in SCHEDULER_FLAGS}
    if args.scheduler == "fifo" and any(v is not None for v in given.values()):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)
        raise UsageError(f"{flags} set ASHA's rungs; with --scheduler fifo nothing is stopped: drop them "
                         "or use --scheduler asha")
    try:
        return resolve_settings(space, max_epochs, **given)
    except ValueError as e:
        raise UsageError(f"--scheduler asha: {e.args[0]} (flags --grace-period, --brackets)") from None


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
        try:
            fs, path = storage.resolve(uri)
            bucket = fs.get_file_info(path.split("/", 1)[0])
        except (OSError, ValueError) as e:  # bad URI, unreachable endpoint, refused credentials
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--storage-path {base}: cannot reach it ({first}); check the URI, "
                             "--s3-endpoint and the credentials in the environment") from None
        if bucket.type == pafs.FileType.NotFound:
            raise UsageError(f"--storage-path {base}: bucket {bucket.path!r} does not exist; create it first")
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


def cluster_runtime_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """What trials on other nodes need from this driver: the project's code (the packages trials
    import) and the S3 endpoint. Credentials stay with the nodes' own environment or instance roles;
    they are not copied into the cluster. Inside a `ray job` (or a KubeRay RayJob) whose own runtime
    env already sets the working dir or a variable, the job's wins: Ray refuses to merge a conflict."""
    job = json.loads(environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    env: dict[str, Any] = {}
    if "working_dir" not in job:
        env.update(working_dir=str(PROJECT_DIR), excludes=WORKING_DIR_EXCLUDES)
    env_vars = {k: environ[k] for k in ("AWS_ENDPOINT_URL",) if k in environ and k not in job.get("env_vars", {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def connect_ray(args: argparse.Namespace) -> None:  # noqa: ANN201
    """Join the cluster at --address, or start an embedded Ray (address="local": always a fresh one,
    never a cluster some other process started on this host)."""
    import ray

    options: dict[str, Any] = {"log_to_driver": args.verbose > 0, "logging_level": "WARNING",
                               "configure_logging": True}
    if args.address is None:
        ray.init(address="local", include_dashboard=False, **options)
        return
    try:
        ray.init(address=args.address, runtime_env=cluster_runtime_env(os.environ), **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"--address {args.address!r}: cannot join a Ray cluster there ({e}). "
                         "Start one with `ray start --head`, or leave --address out for an embedded Ray") from None


def trial_gpus(requested: float | None, space_default: float, cluster_gpus: float) -> float:
    """GPUs per trial: the flag when given; else the space's default, but only where the cluster
    has GPUs, so a GPU-minded space (transfer learning) still runs on a CPU-only machine."""
    if requested is not None:
        return requested
    return space_default if cluster_gpus > 0 else 0.0


class Interrupted(Exception):
    """SIGINT or SIGTERM: what is done is kept; the experiment can be resumed (exit 130)."""


# Settings --resume may change: where things are and how much is printed. Every other stored
# setting (space, budget, seeds, searcher, resources, retries) shapes the experiment and must match.
RESUME_MAY_CHANGE = ("resume", "name", "storage_path", "s3_endpoint", "address", "data_dir", "verbose", "quiet")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.explicit = explicit_flags(sys.argv[1:] if argv is None else argv, vars(args))
    # SIGTERM (a scheduler, `kill`) takes Ctrl-C's path: Tune's own SIGINT handler stops the run
    # gracefully and checkpoints the experiment state; outside Tune it raises KeyboardInterrupt.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        return run(args)
    except UsageError as e:
        print(f"run_search.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        print("\ninterrupted", file=sys.stderr)
        if getattr(args, "resume_hint", None):
            print(f"resume with: {args.resume_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


_TERMINATED = False


def _sigterm_as_sigint(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal API
    global _TERMINATED
    _TERMINATED = True
    signal.raise_signal(signal.SIGINT)


def explicit_flags(argv: list[str], known: dict[str, Any]) -> set[str]:
    """Destinations of the flags the user typed (argparse accepts unique prefixes, so do we)."""
    given = set()
    for token in argv:
        if not token.startswith("--") or token == "--":
            continue
        dest = token[2:].split("=", 1)[0].replace("-", "_")
        matches = [k for k in known if k == dest] or [k for k in known if k.startswith(dest)]
        if len(matches) == 1:
            given.add(matches[0])
    return given


def check_storage_writable(storage_path: str) -> None:
    """Fail before anything starts when --storage-path cannot hold an experiment (local paths;
    a bucket's permissions show on its first write). The probe folder is removed again."""
    if storage.is_uri(storage_path):
        return
    path = Path(storage_path).expanduser().absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--storage-path {storage_path}: {probe} is a file, not a folder; "
                         "point --storage-path at a folder you can write to")
    try:
        tempfile.TemporaryDirectory(dir=probe, prefix=".write-probe-").cleanup()
    except OSError as e:
        raise UsageError(f"--storage-path {storage_path} is not writable: cannot create a folder in {probe} "
                         f"({e.strerror or e}); "
                         "point --storage-path at a folder you can write to") from None


def resumed_args(args: argparse.Namespace, meta: dict[str, Any], exp_uri: str) -> argparse.Namespace:
    """The stored arguments of the experiment, with what --resume may change taken from this call.
    A flag given now that contradicts the stored value is refused rather than silently ignored."""
    stored = meta.get("args")
    if not isinstance(stored, dict):
        raise UsageError(f"{exp_uri}/{storage.EXPERIMENT_FILE} holds no stored arguments ('args'); "
                         "it cannot be resumed, start a new experiment under another --name")
    conflicts = [f"--{k.replace('_', '-')} {getattr(args, k)!r} (stored: {stored[k]!r})"
                 for k in sorted(args.explicit - set(RESUME_MAY_CHANGE))
                 if k in stored and getattr(args, k) != stored[k]]
    if conflicts:
        raise UsageError(f"--resume continues {exp_uri} with its stored settings, but "
                         f"{', '.join(conflicts)} differ; drop those flags")
    merged = {**vars(args), **{k: v for k, v in stored.items() if k not in RESUME_MAY_CHANGE}}
    return argparse.Namespace(**merged)


def check_resources(args: argparse.Namespace, gpus: float) -> None:
    """A trial asking more CPUs or GPUs than any node has would wait forever: say so instead."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    where = "the Ray cluster's largest node" if args.address else "this machine"
    for flag, need, key in (("--cpus-per-trial", args.cpus_per_trial, "CPU"), ("--gpus-per-trial", gpus, "GPU")):
        most = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if need > most:
            raise UsageError(f"{flag} {need:g} is more than {where} has ({most:g} {key}); a trial would "
                             f"wait forever. Lower {flag}" + (" or add larger nodes" if args.address else ""))


def resume_command(args: argparse.Namespace, name: str) -> str:
    cmd = ["python", "run_search.py", "--resume", "--name", name, "--storage-path", args.storage_path]
    if args.address:
        cmd += ["--address", args.address]
    if getattr(args, "s3_endpoint", None):  # the bucket is unreachable without it
        cmd += ["--s3-endpoint", args.s3_endpoint]
    return shlex.join(cmd)


def search_incomplete(grid: Any, num_samples: int) -> bool:
    """True when Tune returned early (its SIGINT handler stops gracefully and returns): a trial
    still pending, running or paused, or fewer trials than asked for."""
    return grid.num_terminated + grid.num_errors < max(len(grid), num_samples)


def run(args: argparse.Namespace) -> int:
    # Input checks, cheapest first; nothing is written under --storage-path until all have passed.
    if not hasattr(args, "explicit"):
        args.explicit = set()
    meta_before: dict[str, Any] = {}
    if args.resume:
        if not args.name:
            raise UsageError("--resume needs --name NAME of the experiment to continue")
        use_s3_endpoint(args)
        fs, exp_path, exp_uri = experiment_location(args, args.name)
        meta_file = storage.join(exp_path, storage.EXPERIMENT_FILE)
        if not storage.exists(fs, meta_file):
            raise UsageError(f"--resume: no experiment {exp_uri} (no {storage.EXPERIMENT_FILE}); check --name "
                             "and --storage-path, or drop --resume to start a new one")
        if not storage.exists(fs, storage.join(exp_path, "search", "tuner.pkl")):
            raise UsageError(f"--resume: {exp_uri} stopped before its search started, so there is nothing to "
                             "resume; start it again under a new --name")
        meta_before = storage.read_json(fs, meta_file)
        args = resumed_args(args, meta_before, exp_uri)
    elif not args.space:
        raise UsageError("--space is required (or --resume --name NAME to continue an experiment)")
    space = resolve_space(args)
    dataset_name = args.dataset or space.dataset
    max_epochs = args.max_epochs or space.max_epochs
    num_samples = check_search_flags(args, space, dataset_name, max_epochs)
    asha = scheduler_settings(args, space, max_epochs)
    if args.max_failures < 0:
        raise UsageError(f"--max-failures must be >= 0, got {args.max_failures}")
    if getattr(args, "checkpoint_every", 1) < 1:
        raise UsageError(f"--checkpoint-every must be >= 1 epoch, got {args.checkpoint_every}")
    check_storage_writable(args.storage_path)
    use_s3_endpoint(args)
    name = args.name or f"{space.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    fs, exp_path, exp_uri = experiment_location(args, name)
    if not args.resume and storage.exists(fs, exp_path):
        raise UsageError(f"experiment {exp_uri} already exists; pick another --name, "
                         "or add --resume to continue it")
    data = load_data(args, dataset_name)

    import ray
    from ray import tune

    from trainables import tune_settings
    from trainables.trainable import train_trial
    from search_spaces.schedulers import build_scheduler
    from search_spaces.schedulers import record as scheduler_record

    connect_ray(args)
    gpus = trial_gpus(args.gpus_per_trial, space.gpus_per_trial, ray.cluster_resources().get("GPU", 0.0))
    check_resources(args, gpus)
    signal.signal(signal.SIGTERM, _sigterm_as_sigint)  # again: ray.init installs its own (sys.exit)
    meta = {
        "experiment": name, "space": space.name, "dataset": dataset_name, "max_epochs": max_epochs,
        "num_samples": num_samples, "seed": args.seed, "scheduler": args.scheduler, "search": args.search,
        "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": gpus, "argv": sys.argv[1:],
        "scheduler_settings": scheduler_record(args.scheduler, asha, max_epochs, METRIC, MODE),
        "config_version": CONFIG_VERSION,  # which defaults a params.json without a knob means
        "created_at": dt.datetime.now(dt.UTC).isoformat(), **provenance(),
        # Everything --resume needs to rebuild this run with no other flags.
        "args": {k: v for k, v in vars(args).items() if k not in ("explicit", "resume", "resume_hint")},
    }
    if args.resume:  # keep the original record; note when it was resumed and from what code
        meta = {**meta_before, "resumed": [*meta_before.get("resumed", []),
                                           {"at": meta["created_at"], "argv": sys.argv[1:], **provenance()}]}
    storage.write_text(fs, storage.join(exp_path, storage.EXPERIMENT_FILE), _json(meta))
    args.resume_hint = resume_command(args, name)
    fixed = {"dataset": dataset_name, "seed": args.seed, "max_epochs": max_epochs, **fixed_knobs(args)}
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, cpus=args.cpus_per_trial, gpus=gpus,
                             checkpoint_every=getattr(args, "checkpoint_every", 1)),
        {"cpu": args.cpus_per_trial, "gpu": gpus})
    search_path = storage.join(exp_uri if storage.is_uri(exp_uri) else exp_path, "search")
    # A restore brings back the searcher's and scheduler's state and the trials; finished trials are not
    # re-run, unfinished and errored ones continue from their last checkpoint. The dataset is passed again.
    restored = tune.Tuner.restore(search_path, trainable=trainable, resume_errored=True) if args.resume else None
    search_alg, param_space = build_search(args, space, fixed)
    tuner = restored or tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=num_samples,
            search_alg=search_alg, scheduler=build_scheduler(args.scheduler, asha, max_epochs),
            max_concurrent_trials=args.max_concurrent,
            trial_dirname_creator=trial_dirname,
            reuse_actors=reuse_workers(args),
        ),
        run_config=tune.RunConfig(
            name="search", storage_path=exp_uri if storage.is_uri(exp_uri) else exp_path,
            checkpoint_config=tune_settings.checkpoint_config(), callbacks=tune_settings.result_loggers(),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            verbose=max(0, min(3, 1 + args.verbose - args.quiet)),
        ),
    )
    try:
        grid = tuner.fit()
        if _TERMINATED or search_incomplete(grid, num_samples):
            raise Interrupted
    except BaseException:
        # Ctrl-C, SIGTERM or a crash: the tables still show what is finished. (They can always be
        # rebuilt from the folder alone: analysis.tables.export_tables.)
        _export_best_effort(exp_uri)
        raise
    folder, trials, _ = export_tables(exp_uri)
    if args.confirm_top:
        run_confirm(args, trials.to_pandas(), trainable, fs, exp_path, exp_uri, max_epochs)
        folder, trials, _ = export_tables(exp_uri)
        print_confirmed(trials.to_pandas())
    code = summarize(trials.to_pandas(), folder if not storage.is_uri(exp_uri) else f"{exp_uri}/tables")
    write_report(exp_uri)
    return code


def write_report(exp_uri: str) -> None:
    """The report (analysis.report) from the tables just written; a failure here never costs the tables
    or changes the exit code: `python -m analysis EXPERIMENT_DIR` rebuilds it."""
    try:
        from analysis.report import build_report

        print(f"report: {build_report(exp_uri)['folder']}/report.md")
    except Exception as e:  # noqa: BLE001 - the search's result is the tables; the report is derived
        print(f"run_search.py: warning: report not written ({type(e).__name__}: {e}); "
              f"rebuild it with: python -m analysis {exp_uri}", file=sys.stderr)


def _export_best_effort(exp_uri: str) -> None:
    try:
        folder, trials, _ = export_tables(exp_uri)
        print(f"tables for the {trials.num_rows} trials so far: {folder}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - never hide the original failure behind this one
        print(f"run_search.py: could not write the tables ({e}); rebuild them later from {exp_uri}",
              file=sys.stderr)


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
    return json.dumps(obj, indent=2, default=str)


if __name__ == "__main__":
    # Tune warns when per-epoch checkpoints snapshot the experiment often; that is by design here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    sys.exit(main())
