#!/usr/bin/env python
"""Run a hyperparameter search over a Keras CNN: parse the flags, run the experiment (the driver package), exit.

    python run_search.py --space batchnorm --dataset digits --num-samples 6 --max-epochs 3
    python run_search.py --plugin examples/resnet_mini_plugin.py --space resnet_mini --dataset digits

Exit codes: 0 done; 1 every trial failed; 2 bad usage or input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

import driver
from driver.request import DEFAULTS, Request
from search_spaces import SPACES
from trainables.plugins import PluginError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags typed, and only those: defaults live in driver.request.Request (one place), so the
    namespace also says which flags were given (what --resume may not contradict)."""
    # One flag per line, as the table of flags it is: not reformatted.
    # fmt: off
    d = DEFAULTS
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE",
                   help="import user code that registers models, datasets and spaces (repeatable); "
                        "a .py file or an importable module; shipped to every trial, on a cluster too")
    p.add_argument("--space", help=f"search space, one of: {', '.join(sorted(SPACES))}, or a plugin's "
                                   "(required unless --resume)")
    p.add_argument("--dataset", help="registered dataset: digits (bundled, offline), cifar100_25 (CIFAR-100's "
                                     "first 25 fine classes, the reference study's), cifar100, cub200, or a "
                                     "plugin's (default: the space's own)")
    p.add_argument("--data-dir", help="folder holding the dataset in its standard format, e.g. the folder with "
                                      "cifar-100-python/ in it (default: Keras' cache, downloading if needed)")
    p.add_argument("--num-samples", type=int, help="trials to sample; with --resume, a larger N extends a finished "
                                                   "search by N minus the trials it has, with the same Optuna study "
                                                   "(default: the space's own)")
    p.add_argument("--max-epochs", type=int, help="full budget of a trial, ASHA's max_t (default: the space's own)")
    p.add_argument("--scheduler", choices=("asha", "fifo", "pbt"),
                   help=f"asha stops hopeless trials early at its rungs; fifo runs every trial to its budget; pbt "
                        f"(population-based training, with --search random or grid) has weak trials continue "
                        f"from strong ones' checkpoints with perturbed learning rate, momentum, weight decay "
                        f"(default: {d.scheduler})")
    p.add_argument("--perturbation-interval", type=int, metavar="EPOCHS",
                   help="pbt: epochs between two perturbations of a trial (default: a quarter of the budget)")
    p.add_argument("--grace-period", type=int, metavar="EPOCHS",
                   help="ASHA: epochs before a trial's first judgement (default: the space's own)")
    p.add_argument("--reduction-factor", type=int, metavar="RF",
                   help="ASHA: each rung keeps the best 1/RF of the trials; rungs at grace*RF^k epochs "
                        "(default: the space's own)")
    p.add_argument("--brackets", type=int,
                   help="ASHA brackets; bracket s first judges at grace*RF^s, hedging against a misleading "
                        "first rung (default: the space's own)")
    p.add_argument("--stop-on", choices=("last", "best", "ema"),
                   help="ASHA compares at a rung: the epoch's val_accuracy, the best so far, or an "
                        "exponential mean (weight 1/2 on the newest epoch) (default: the space's own)")
    p.add_argument("--search", choices=("optuna", "random", "grid"),
                   help=f"Optuna TPE, random, or every cell of the space's grid (default: {d.search})")
    p.add_argument("--objective", metavar="METRIC[:min|max],...",
                   help="what Optuna optimises: val_accuracy, then optionally costs (param_count, "
                        "macs_per_image, inference_s_per_image_b1, inference_s_per_image_large; minimised), "
                        "e.g. val_accuracy,param_count; ASHA stops on val_accuracy alone; the report draws "
                        f"the Pareto front (default: {d.objective})")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="RDB URL of the Optuna study (sqlite:///x.db, postgresql://...), studied under the "
                        "experiment's name (default: the journal file optuna.journal in the experiment folder)")
    p.add_argument("--seed", type=int, help=f"seeds the searcher and every trial (default: {d.seed})")
    p.add_argument("--repeats", type=repeats, metavar="R|auto",
                   help="with --search grid: run every cell R times (seeds S, S+1, ...); with --confirm-top: "
                        "retrain each of the best configs R times; auto: race, a seed more only while a "
                        "comparison is open (analysis/README.md) (default: 0)")
    p.add_argument("--min-repeats", type=int, metavar="N",
                   help="--repeats auto: seeds every cell or config starts with (default 3)")
    p.add_argument("--max-repeats", type=int, metavar="N",
                   help="--repeats auto: seeds a cell or config gets at most (default 10)")
    p.add_argument("--resolution", type=float, metavar="POINTS",
                   help="a comparison whose interval lies within +-POINTS accuracy points of 0 is settled: "
                        "no difference larger than POINTS (default 1); a race stops there")
    p.add_argument("--cells", action="append", metavar="KNOB=VALUE",
                   help="with --search grid: run only the cells whose KNOB is VALUE (repeatable; all must "
                        "match), e.g. --cells model=basenet")
    p.add_argument("--warm-start", action="append", metavar="EXP",
                   help="start the search with the best configurations of experiment EXP (a name in "
                        "--storage-path, or its folder; repeatable); Optuna evaluates them first and learns from "
                        "them; trials.parquet's warm_start column names where each came from")
    p.add_argument("--warm-start-top", type=int, metavar="K",
                   help=f"--warm-start: how many of each experiment's best configurations "
                        f"(default: {d.warm_start_top})")
    p.add_argument("--confirm-top", type=int, metavar="K",
                   help="after the search, retrain the best K configs --repeats times with new seeds, "
                        "full budget, no early stopping (phase 'confirm')")
    p.add_argument("--patience", type=int, metavar="EPOCHS",
                   help="within-trial early stopping: epochs without val_loss improvement (default: 0, off)")
    p.add_argument("--weights", metavar="imagenet|none|PATH",
                   help="transfer spaces: backbone weights (default: imagenet)")
    p.add_argument("--input-size", type=int, metavar="PIXELS",
                   help="transfer spaces: image side fed to the backbone (default: 224)")
    p.add_argument("--cpus-per-trial", type=float,
                   help=f"CPU cores Ray reserves for each trial; TensorFlow uses that many threads "
                        f"(default: {d.cpus_per_trial:g})")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, fractional allowed (default: the space's own on a GPU cluster, else 0)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--address", help="join a Ray cluster ('auto', 'ray://host:10001') (default: start an "
                                     "embedded Ray)")
    p.add_argument("--storage-path", help=f"local folder, NFS, or s3:// / gs:// URI (default: {d.storage_path})")
    p.add_argument("--s3-endpoint", metavar="URL",
                   help="endpoint of an S3-compatible store (MinIO, Ceph, ...) for an s3:// --storage-path, "
                        "e.g. http://minio:9000; sets AWS_ENDPOINT_URL for the driver and every trial")
    p.add_argument("--name", help="experiment name: one folder inside --storage-path, of letters, "
                                  "digits, ., _, - (default: <space>-<UTC timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name after a crash or Ctrl-C, with its stored settings "
                        "(its plugins included); a larger --num-samples extends it, and --confirm-top/--repeats "
                        "given anew confirm afresh")
    p.add_argument("--max-failures", type=int,
                   help=f"retries of a failed trial, each from its last checkpoint (default: {d.max_failures})")
    p.add_argument("--checkpoint-every", type=int, metavar="EPOCHS",
                   help="a trial checkpoints every EPOCHS epochs and at its full budget; a killed worker "
                        "loses at most the EPOCHS - 1 epochs since its last checkpoint "
                        f"(default: {d.checkpoint_every})")
    p.add_argument("--keep-checkpoints", type=int, metavar="N",
                   help="checkpoints kept per trial on the storage (older ones are deleted once no saved "
                        "experiment state names them: a few snapshot periods later, all by the end); 0 "
                        "keeps every one (default: 2; every one with --scheduler pbt)")
    p.add_argument("--fresh-workers", action="store_true",
                   help="one fresh worker process per trial (returns all its memory, GPU too, when it "
                        "ends) (default: reuse a worker for the next trial that asks the same resources)")
    p.add_argument("--worker-memory-growth", type=float, metavar="PCT",
                   help="a reused worker is replaced by a fresh one between two trials once its resident memory "
                        "is more than PCT %% above what it was after its first trial (a Keras leak grows it "
                        "~11 MB per small trial); no trial fails, repeats or loses an epoch, the next one starts "
                        f"as in a fresh worker; 0: never (default: {d.worker_memory_growth:g})")
    p.add_argument("--mlflow-uri", metavar="URI",
                   help="log every trial as an MLflow run (params: its knobs; metrics: each epoch; tags: experiment, "
                        "phase, trial_id) to this tracking URI, e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db "
                        "(default: nothing logged)")
    p.add_argument("-v", "--verbose", action="count", help="more progress output")
    p.add_argument("-q", "--quiet", action="count", help="less progress output")
    # fmt: on
    return p.parse_args(argv)


def repeats(text: str) -> int | str:
    """--repeats: a number of seeds, or 'auto' (a race)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seeds or 'auto', got {text!r}") from None


def request_of(argv: list[str]) -> tuple[Request, frozenset[str]]:
    """The request of a command line, and which settings it typed."""
    given = vars(parse_args(argv))
    return Request.from_flags(given), frozenset(given)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    request, given = request_of(argv)
    with driver.sigterm_as_sigint() as stop:
        try:
            return driver.run(request, given, argv, stop)
        except (driver.UsageError, PluginError) as e:
            print(f"run_search.py: error: {e}", file=sys.stderr)
            return driver.EXIT_USAGE
        except (driver.Interrupted, KeyboardInterrupt) as e:
            print("\ninterrupted", file=sys.stderr)
            if isinstance(e, driver.Interrupted) and e.resume_hint:
                print(f"resume with: {e.resume_hint}", file=sys.stderr)
            return driver.EXIT_INTERRUPTED


if __name__ == "__main__":
    # Tune warns when per-epoch checkpoints snapshot the experiment often; that is by design here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    sys.exit(main())
