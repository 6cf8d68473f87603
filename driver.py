"""The driver: checks the request, then runs one Ray Tune experiment per phase (search, then confirm)
and resumes them. run_search.py is its command line.

Read top to bottom: `run` checks every input (cheapest first; nothing is written under --storage-path
until all have passed), joins Ray, records experiment.json, then runs the phases with `run_phase`, the
one function that builds a Tuner, and finally writes the tables and the report. No module-level mutable
state: the SIGTERM flag lives in a `StopSignal` the caller owns.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import errno
import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from analysis import lock, selection, storage
from analysis.tables import CONFIG_VERSION, export_tables
from search_spaces import SPACES, SearchSpace
from trainables import plugins, registry
from trainables.config import TrialConfig, knob_types

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
METRIC, MODE = "val_accuracy", "max"
PROJECT_DIR = Path(__file__).resolve().parent
# Metrics --objective may name, with their direction when the flag gives none. The first objective is
# validation accuracy (ASHA, the confirmation stage and the report rank trials by it); the others are the
# cost columns every report carries (trainables.cost), in their units: weights, MACs, seconds per image.
OBJECTIVE_METRICS = {
    "val_accuracy": "max",
    "param_count": "min",
    "macs_per_image": "min",
    "inference_s_per_image_b1": "min",
    "inference_s_per_image_large": "min",
}
JOURNAL_FILE = "optuna.journal"  # the search's Optuna study, in the experiment folder
# Settings --resume may change: where things are and how much is printed. Every other stored
# setting (space, budget, seeds, searcher, resources, retries, plugins) shapes the experiment and must match.
RESUME_MAY_CHANGE = ("resume", "name", "storage_path", "s3_endpoint", "address", "data_dir", "verbose", "quiet")
# Flags that fix a knob only some models read: refused for a space none of whose models reads it.
MODEL_KNOB_FLAGS = {"weights": "--weights", "input_size": "--input-size"}
# An experiment name is one folder (one key prefix) inside --storage-path: no separator, no '..', only
# characters that a folder and an S3 key both hold without escaping.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# Left out of the code shipped to a cluster's workers: environments, results, caches.
WORKING_DIR_EXCLUDES = [".venv", ".git", "results", "**/__pycache__", "*.egg-info", ".pytest_cache"]


class UsageError(Exception):
    """Bad usage or input: printed as one line, exit 2, no traceback."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: what is done is kept; the experiment can be resumed (exit 130)."""

    def __init__(self, resume_hint: str | None = None) -> None:
        super().__init__(resume_hint)
        self.resume_hint = resume_hint


class StopSignal:
    """SIGTERM (a scheduler, `kill`) takes Ctrl-C's path: Tune's own SIGINT handler stops the run
    gracefully and checkpoints the experiment state; outside Tune it raises KeyboardInterrupt.
    `terminated` tells a run Tune returned from early because of it."""

    def __init__(self) -> None:
        self.terminated = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.terminated = True
        signal.raise_signal(signal.SIGINT)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)


@contextmanager
def sigterm_as_sigint() -> Iterator[StopSignal]:
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopSignal()
    stop.install()
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Where an experiment lives: filesystem, path on it, path or URI as the user sees it."""

    name: str
    fs: Any
    path: str
    uri: str

    @property
    def root(self) -> str:
        """What Ray Tune's storage_path takes: the URI for a bucket, else the local path."""
        return self.uri if storage.is_uri(self.uri) else self.path

    @property
    def tables(self) -> str:
        return f"{self.uri}/tables" if storage.is_uri(self.uri) else storage.join(self.path, "tables")


@dataclasses.dataclass(frozen=True)
class Phase:
    """One Ray Tune run of the experiment, in `<experiment>/<name>`."""

    name: str  # "search" or "confirm"
    num_samples: int
    search_alg: Any
    param_space: dict[str, Any] | None
    scheduler: Any
    restore: bool  # continue the run stored there (--resume) instead of starting it


def run(args: argparse.Namespace, explicit: frozenset[str], argv: list[str], stop: StopSignal) -> int:
    """The whole experiment; returns the exit code, raises UsageError or Interrupted."""
    meta_before: dict[str, Any] = {}
    args = with_absolute_plugins(args)
    check_name(args.name)
    if args.resume:
        if not args.name:
            raise UsageError("--resume needs --name NAME of the experiment to continue")
        use_s3_endpoint(args)
        exp = locate(args, args.name)
        check_free(exp)
        meta_before = read_resumable(exp)
        args = resumed_args(args, explicit, meta_before, exp.uri)
    elif not args.space:
        raise UsageError("--space is required (or --resume --name NAME to continue an experiment)")
    load_plugins(args.plugin)
    space = resolve_space(args)
    dataset = resolve_dataset(args, space)
    max_epochs = args.max_epochs or space.max_epochs
    num_samples = check_search_flags(args, space, dataset, max_epochs)
    asha = scheduler_settings(args, space, max_epochs)
    objectives(args)
    if getattr(args, "checkpoint_every", 1) < 1:
        raise UsageError(f"--checkpoint-every must be >= 1 epoch, got {args.checkpoint_every}")
    if getattr(args, "keep_checkpoints", 2) < 0:
        raise UsageError(f"--keep-checkpoints must be >= 0 (0 keeps every checkpoint), got {args.keep_checkpoints}")
    check_storage_writable(args.storage_path)
    use_s3_endpoint(args)
    exp = locate(args, args.name or f"{space.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}")
    if not args.resume and storage.exists(exp.fs, exp.path):
        check_free(exp)
        raise UsageError(f"experiment {exp.uri} already exists; pick another --name, or add --resume to continue it")
    study = optuna_study(args, exp)
    data = load_data(args, dataset)

    import ray

    connect_ray(args)
    gpus = trial_gpus(args.gpus_per_trial, space.gpus_per_trial, ray.cluster_resources().get("GPU", 0.0))
    check_resources(args, gpus)
    stop.install()  # again: ray.init installs its own SIGTERM handler (sys.exit)
    # The lock is released however this ends; a killed driver's, see analysis.lock.
    with storage_full_stops(exp, resume_command(args, exp.name)), hold_experiment(exp, args.resume):
        return run_held(
            args, exp, space, dataset, max_epochs, num_samples, gpus, argv, meta_before, asha, data, stop, study
        )


def run_held(
    args: argparse.Namespace,
    exp: Experiment,
    space: SearchSpace,
    dataset: str,
    max_epochs: int,
    num_samples: int,
    gpus: float,
    argv: list[str],
    meta_before: dict[str, Any],
    asha: Any,
    data: Any,
    stop: StopSignal,
    study: OptunaStudy | None,
) -> int:
    """The experiment, once every check has passed and this driver holds it."""
    from ray import tune

    from trainables.trainable import train_trial

    write_meta(args, exp, space, dataset, max_epochs, num_samples, gpus, argv, meta_before, asha)
    hint = resume_command(args, exp.name)
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            data=data,
            cpus=args.cpus_per_trial,
            gpus=gpus,
            checkpoint_every=getattr(args, "checkpoint_every", 1),
            plugins=tuple(args.plugin),
            shipped=args.address is not None,
        ),
        {"cpu": args.cpus_per_trial, "gpu": gpus},
    )
    fixed = {"dataset": dataset, "seed": args.seed, "max_epochs": max_epochs, **fixed_knobs(args)}
    search_alg, param_space = build_search(args, space, fixed, study)
    scheduler = build_scheduler(args.scheduler, asha, max_epochs)
    search = Phase("search", num_samples, search_alg, param_space, scheduler, args.resume)
    try:
        run_phase(search, trainable, args, exp, stop, hint)
    finally:
        upload_study(study)
    _, trials, _ = export_tables(exp.uri)
    if args.confirm_top:
        confirm = confirm_phase(args, trials.to_pandas(), exp, max_epochs)
        if confirm is not None:
            run_phase(confirm, trainable, args, exp, stop, hint)
        _, trials, _ = export_tables(exp.uri)
        print("\n".join(selection.confirmed_lines(trials.to_pandas())))
    lines, all_failed = selection.outcome(trials.to_pandas(), exp.tables)
    print("\n".join(lines))
    write_report(exp.uri)
    return EXIT_ALL_FAILED if all_failed else EXIT_OK


def run_phase(
    phase: Phase, trainable: Any, args: argparse.Namespace, exp: Experiment, stop: StopSignal, hint: str
) -> None:
    """Build the phase's Tuner (or restore it: the searcher's and scheduler's state and the trials come
    back; finished trials are not re-run, unfinished and errored ones continue from their last
    checkpoint) and run it. Ctrl-C, SIGTERM or a crash still leave the tables of what is finished."""
    from ray import tune

    from trainables import tune_settings

    if phase.restore:
        tuner = tune.Tuner.restore(storage.join(exp.root, phase.name), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=phase.param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                num_samples=phase.num_samples,
                search_alg=phase.search_alg,
                scheduler=phase.scheduler,
                max_concurrent_trials=args.max_concurrent,
                trial_dirname_creator=trial_dirname,
                reuse_actors=reuse_workers(args),
            ),
            run_config=tune.RunConfig(
                name=phase.name,
                storage_path=exp.root,
                checkpoint_config=tune_settings.checkpoint_config(getattr(args, "keep_checkpoints", 2)),
                callbacks=tune_settings.result_loggers(),
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                verbose=max(0, min(3, 1 + args.verbose - args.quiet)),
            ),
        )
    try:
        grid = tuner.fit()
        if stop.terminated or search_incomplete(grid, phase.num_samples, phase.search_alg):
            raise Interrupted(hint)
    except BaseException as e:
        export_best_effort(exp.uri)  # the tables can always be rebuilt later: analysis.tables
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(hint) from None
        raise


def confirm_phase(args: argparse.Namespace, trials: Any, exp: Experiment, max_epochs: int) -> Phase | None:
    """The confirmation run: the best configs as fixed points, FIFO, full budget (analysis.selection)."""
    from ray.tune.schedulers import FIFOScheduler

    from search_spaces.optuna_search import fixed_configs_search

    race = race_design(args)
    configs = selection.confirm_configs(trials, args.confirm_top, 1 if race else args.repeats, max_epochs)
    if not configs:
        print("confirmation skipped: no search trial finished without error")
        return None
    restore = args.resume and storage.exists(exp.fs, storage.join(exp.path, "confirm", "tuner.pkl"))
    if race is not None:  # --repeats auto: the configs race seed by seed (search_spaces.racing)
        from search_spaces.racing import confirm_race, max_trials

        racer = confirm_race(configs, race)
        print(f"\nracing the best {len(configs)} configs, {race.min_repeats} to {race.max_repeats} seeds each")
        return Phase("confirm", max_trials(racer), racer, None, FIFOScheduler(), restore)
    print(
        f"\nconfirming the best {len(configs) // args.repeats} configs, {args.repeats} seeds each "
        f"(seeds {configs[0]['seed']}..{configs[0]['seed'] + args.repeats - 1}), {max_epochs} epochs"
    )
    search_alg, param_space = fixed_configs_search(configs)
    return Phase("confirm", len(configs), search_alg, param_space, FIFOScheduler(), restore)


# ---- checks of the request -------------------------------------------------------------------------


def with_absolute_plugins(args: argparse.Namespace) -> argparse.Namespace:
    """--plugin files as absolute paths: what experiment.json keeps and trials find from any folder."""
    refs = [str(Path(r).expanduser().absolute()) if plugins.is_file_ref(r) else r for r in args.plugin or []]
    return argparse.Namespace(**{**vars(args), "plugin": refs})


def load_plugins(refs: list[str]) -> None:
    try:
        plugins.load_plugins(refs)
    except plugins.PluginError as e:
        raise UsageError(str(e)) from None


def resolve_space(args: argparse.Namespace) -> SearchSpace:
    if args.space not in SPACES:
        raise UsageError(
            f"--space {args.space!r} is unknown; known spaces: {', '.join(sorted(SPACES))}"
            + ("" if args.plugin else " (or one a --plugin FILE registers)")
        )
    for flag in ("num_samples", "max_epochs", "max_concurrent"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UsageError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    if args.max_failures < 0:
        raise UsageError(f"--max-failures must be >= 0, got {args.max_failures}")
    return SPACES[args.space]


def resolve_dataset(args: argparse.Namespace, space: SearchSpace) -> str:
    name = args.dataset or space.dataset
    if name not in registry.dataset_names():
        raise UsageError(f"--dataset {name!r}: invalid choice; known datasets: {', '.join(registry.dataset_names())}")
    return name


def cell_filter(args: argparse.Namespace) -> dict[str, str]:
    """--cells KNOB=VALUE ... as {knob: value}; a knob that is not a config knob is refused."""
    where: dict[str, str] = {}
    for item in args.cells or []:
        knob, sep, value = item.partition("=")
        if not sep or knob not in knob_types():
            raise UsageError(f"--cells {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(knob_types())}")
        where[knob] = value
    return where


def fixed_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """Knobs the flags fix for every trial (besides dataset, seed, budget)."""
    knobs: dict[str, Any] = {"patience": args.patience} if args.patience else {}
    for knob in MODEL_KNOB_FLAGS:
        if getattr(args, knob) is not None:
            knobs[knob] = getattr(args, knob)
    return knobs


def check_search_flags(args: argparse.Namespace, space: SearchSpace, dataset: str, max_epochs: int) -> int:
    """Checks of --search, --repeats, --confirm-top, --cells, --patience, --weights, --input-size against
    the space; returns how many trials the search phase runs."""
    race = race_design(args)
    if race is not None and args.search == "grid" and args.scheduler != "fifo":
        raise UsageError("--repeats auto races full-budget runs of every cell; add --scheduler fifo (ASHA stops some)")
    for flag in ("repeats", "confirm_top", "patience"):
        if getattr(args, flag) != "auto" and getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if args.confirm_top and not args.repeats:
        raise UsageError(
            "--confirm-top K needs --repeats R (R >= 1): how often each of the K best configs is retrained"
        )
    if args.cells and args.search != "grid":
        raise UsageError("--cells selects cells of a grid; add --search grid or drop --cells")
    if args.repeats and not args.confirm_top and args.search != "grid":
        raise UsageError(
            "--repeats R needs --confirm-top K (retrain the K best configs R times) "
            "or --search grid (run every cell R times)"
        )
    if args.search == "grid":
        if not space.cells():
            with_grid = sorted(name for name, s in SPACES.items() if s.cells())
            raise UsageError(
                f"--search grid: space {space.name!r} has no grid; spaces with one: "
                f"{', '.join(with_grid)}; or use --search optuna or random"
            )
        if not space.cells(cell_filter(args)):
            raise UsageError(
                f"--cells {' '.join(args.cells)}: no cell of space {space.name!r} matches; its cells: "
                + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in space.cells())
            )
        if args.num_samples is not None:
            raise UsageError(
                "--num-samples does not apply to --search grid, which runs every cell "
                "(--repeats times); drop --num-samples"
            )
    examples = space.examples()
    knobs = fixed_knobs(args)
    read = {k for e in examples for k in registry.model(e.get("model", TrialConfig.model)).knobs}
    for knob, flag in MODEL_KNOB_FLAGS.items():
        if knob in knobs and knob not in read:
            raise UsageError(
                f"{flag} applies to transfer-learning spaces only (e.g. --space transfer), whose "
                f"models read {knob}; space {space.name!r} trains no backbone; drop {flag}"
            )
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
        return len(space.cells(cell_filter(args))) * (race.max_repeats if race else max(1, args.repeats))
    return int(args.num_samples or space.num_samples)


def race_design(args: argparse.Namespace) -> Any:
    """--repeats auto: the race's design (analysis.sequential.Design); None for a fixed --repeats R.
    --min-repeats/--max-repeats apply to a race only; --resolution to any report."""
    from analysis import sequential

    given = [f"--{f.replace('_', '-')}" for f in ("min_repeats", "max_repeats") if getattr(args, f, None) is not None]
    try:
        sequential.resolution(getattr(args, "resolution", None))
        if getattr(args, "repeats", 0) != "auto":
            if given:
                raise ValueError(f"{given[0]} applies to --repeats auto (a race); drop it or add --repeats auto")
            return None
        return sequential.race_design(args.min_repeats, args.max_repeats, getattr(args, "resolution", None))
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_storage_writable(storage_path: str) -> None:
    """Fail before anything starts when --storage-path cannot hold an experiment (local paths;
    a bucket's permissions show on its first write). The probe folder is removed again."""
    if storage.is_uri(storage_path):
        return
    probe = Path(storage_path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(
            f"--storage-path {storage_path}: {probe} is a file, not a folder; "
            "point --storage-path at a folder you can write to"
        )
    try:
        tempfile.TemporaryDirectory(dir=probe, prefix=".write-probe-").cleanup()
    except OSError as e:
        raise UsageError(
            f"--storage-path {storage_path} is not writable: cannot create a folder in {probe} "
            f"({e.strerror or e}); point --storage-path at a folder you can write to"
        ) from None


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


def check_name(name: str | None) -> None:
    """--name must stay inside --storage-path: refused before anything is written."""
    if name is None or (NAME_PATTERN.fullmatch(name) and ".." not in name):
        return
    if "/" in name or "\\" in name or os.sep in name:
        why = "has a path separator"
    elif ".." in name:
        why = "has '..'"
    else:
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        why = f"has characters a folder or bucket key cannot hold plainly ({' '.join(map(repr, bad))})" if bad else ""
        why = why or ("is too long" if len(name) > 200 else "must start with a letter or digit")
    raise UsageError(
        f"--name {name!r} {why}: an experiment name is one folder inside --storage-path, made of letters, "
        "digits, '.', '_' and '-' (at most 200, starting with a letter or digit, no '..'), e.g. --name lr-sweep-2"
    )


def check_free(exp: Experiment) -> None:
    """Refuse an experiment another driver is running (analysis.lock); writes nothing."""
    try:
        lock.check(exp.fs, exp.path, exp.uri)
    except lock.LockHeld as e:
        raise UsageError(str(e)) from None


@contextmanager
def hold_experiment(exp: Experiment, resume: bool) -> Iterator[None]:
    """Hold the experiment's lock (analysis.lock) while the block runs, or refuse: another driver has it."""
    try:
        held = lock.acquire(exp.fs, exp.path, exp.uri)
    except lock.LockHeld as e:
        raise UsageError(str(e)) from None
    with held:
        if not resume and storage.exists(exp.fs, storage.join(exp.path, storage.EXPERIMENT_FILE)):
            # another driver started and finished this name since the check in run()
            raise UsageError(
                f"experiment {exp.uri} already exists; pick another --name, or add --resume to continue it"
            )
        yield


def is_storage_full(e: BaseException) -> bool:
    """ENOSPC, or Tune's TuneError around the StorageFull its callback raised (Tune wraps a callback's
    exception, which stays reachable as the wrapper's context)."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def storage_full_stops(exp: Experiment, hint: str) -> Iterator[None]:
    """A full --storage-path (a trial's checkpoint, the driver's own records) stops the experiment with one
    line naming it: what is already there stays readable (tables are written to a temp file, then renamed),
    and --resume continues once there is space."""
    try:
        yield
    except Exception as e:
        if not is_storage_full(e):
            raise
        raise UsageError(
            f"--storage-path: no space left on the device holding {exp.uri}; the search stopped, and what it "
            f"wrote so far is intact. Free space there, then resume with: {hint}"
        ) from None


def locate(args: argparse.Namespace, name: str) -> Experiment:
    base = args.storage_path
    if not storage.is_uri(base):
        fs, path = storage.resolve(Path(base) / name)
        return Experiment(name, fs, path, path)
    uri = f"{base.rstrip('/')}/{name}"
    try:
        fs, path = storage.resolve(uri)
        bucket = fs.get_file_info(path.split("/", 1)[0])
    except (OSError, ValueError) as e:  # bad URI, unreachable endpoint, refused credentials
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--storage-path {base}: cannot reach it ({first}); check the URI, "
            "--s3-endpoint and the credentials in the environment"
        ) from None
    if bucket.type == pafs.FileType.NotFound:
        raise UsageError(f"--storage-path {base}: bucket {bucket.path!r} does not exist; create it first")
    return Experiment(name, fs, path, uri)


def read_resumable(exp: Experiment) -> dict[str, Any]:
    meta_file = storage.join(exp.path, storage.EXPERIMENT_FILE)
    if not storage.exists(exp.fs, meta_file):
        raise UsageError(
            f"--resume: no experiment {exp.uri} (no {storage.EXPERIMENT_FILE}); check --name "
            "and --storage-path, or drop --resume to start a new one"
        )
    if not storage.exists(exp.fs, storage.join(exp.path, "search", "tuner.pkl")):
        raise UsageError(
            f"--resume: {exp.uri} stopped before its search started, so there is nothing to "
            "resume; start it again under a new --name"
        )
    return storage.read_json(exp.fs, meta_file)


def resumed_args(
    args: argparse.Namespace, explicit: frozenset[str], meta: dict[str, Any], exp_uri: str
) -> argparse.Namespace:
    """The stored arguments of the experiment (its plugins included), with what --resume may change taken
    from this call. A flag given now that contradicts the stored value is refused, not silently ignored."""
    stored = meta.get("args")
    if not isinstance(stored, dict):
        raise UsageError(
            f"{exp_uri}/{storage.EXPERIMENT_FILE} holds no stored arguments ('args'); "
            "it cannot be resumed, start a new experiment under another --name"
        )
    conflicts = [
        f"--{k.replace('_', '-')} {getattr(args, k)!r} (stored: {stored[k]!r})"
        for k in sorted(explicit - set(RESUME_MAY_CHANGE))
        if k in stored and getattr(args, k) != stored[k]
    ]
    if conflicts:
        raise UsageError(
            f"--resume continues {exp_uri} with its stored settings, but "
            f"{', '.join(conflicts)} differ; drop those flags"
        )
    merged = {**vars(args), **{k: v for k, v in stored.items() if k not in RESUME_MAY_CHANGE}}
    merged.setdefault("plugin", [])
    return argparse.Namespace(**merged)


def load_data(args: argparse.Namespace, dataset: str) -> Any:
    from trainables.data import DatasetUnavailable, load_dataset

    try:
        return load_dataset(dataset, args.data_dir)
    except DatasetUnavailable as e:
        raise UsageError(
            f"dataset {dataset!r} is unavailable: {e}. Point --data-dir at a folder holding it "
            "in its standard format, or run offline with --dataset digits"
        ) from None


# ---- Ray ---------------------------------------------------------------------------------------------


def cluster_runtime_env(environ: Mapping[str, str], plugin_refs: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """What trials on other nodes need from this driver: the project's code (the packages trials
    import), the plugin files (py_modules: trials import them by module name) and the S3 endpoint.
    Credentials stay with the nodes' own environment or instance roles; they are not copied into the
    cluster. Inside a `ray job` (or a KubeRay RayJob) whose own runtime env already sets the working dir
    or a variable, the job's wins: Ray refuses to merge a conflict."""
    job = json.loads(environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    env: dict[str, Any] = {}
    if "working_dir" not in job:
        env.update(working_dir=str(PROJECT_DIR), excludes=WORKING_DIR_EXCLUDES)
    files = [str(Path(r).absolute()) for r in plugin_refs if plugins.is_file_ref(r)]
    if files:
        env["py_modules"] = [*job.get("py_modules", []), *files]
    env_vars = {k: environ[k] for k in ("AWS_ENDPOINT_URL",) if k in environ and k not in job.get("env_vars", {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def connect_ray(args: argparse.Namespace) -> None:
    """Join the cluster at --address, or start an embedded Ray (address="local": always a fresh one,
    never a cluster some other process started on this host)."""
    import ray

    options: dict[str, Any] = {"log_to_driver": args.verbose > 0, "logging_level": "WARNING", "configure_logging": True}
    if args.address is None:
        ray.init(address="local", include_dashboard=False, **options)
        return
    try:
        ray.init(address=args.address, runtime_env=cluster_runtime_env(os.environ, args.plugin), **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"--address {args.address!r}: cannot join a Ray cluster there ({e}). "
            "Start one with `ray start --head`, or leave --address out for an embedded Ray"
        ) from None


def trial_gpus(requested: float | None, space_default: float, cluster_gpus: float) -> float:
    """GPUs per trial: the flag when given; else the space's default, but only where the cluster
    has GPUs, so a GPU-minded space (transfer learning) still runs on a CPU-only machine."""
    if requested is not None:
        return requested
    return space_default if cluster_gpus > 0 else 0.0


def check_resources(args: argparse.Namespace, gpus: float) -> None:
    """A trial asking more CPUs or GPUs than any node has would wait forever: say so instead."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    where = "the Ray cluster's largest node" if args.address else "this machine"
    for flag, need, key in (("--cpus-per-trial", args.cpus_per_trial, "CPU"), ("--gpus-per-trial", gpus, "GPU")):
        most = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if need > most:
            raise UsageError(
                f"{flag} {need:g} is more than {where} has ({most:g} {key}); a trial would "
                f"wait forever. Lower {flag}" + (" or add larger nodes" if args.address else "")
            )


def build_search(
    args: argparse.Namespace, space: SearchSpace, fixed: dict[str, Any], study: OptunaStudy | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """(search_alg, param_space): Optuna (TPE or random) on the space's define-by-run, learning at
    step = epoch, its study in `study`'s storage; or, for --search grid, every cell of the space's grid
    --repeats times. Several --objective metrics make the study multi-objective."""
    from search_spaces.optuna_search import build_optuna_search, fixed_configs_search, grid_configs

    if args.search == "grid":
        race = race_design(args)
        if race is not None:  # --repeats auto: the cells race seed by seed (search_spaces.racing)
            from search_spaces.racing import grid_race

            return grid_race(space.cells(cell_filter(args)), fixed, race), None
        return fixed_configs_search(grid_configs(space, fixed, args.seed, args.repeats, cell_filter(args)))
    goals = objectives(args)
    return build_optuna_search(
        space,
        fixed,
        metric=[m for m, _ in goals] if len(goals) > 1 else METRIC,
        mode=[d for _, d in goals] if len(goals) > 1 else MODE,
        seed=args.seed,
        random=args.search == "random",
        max_epochs=fixed["max_epochs"],
        storage_spec=study.spec if study else None,
        study_name=study.name if study else None,
    ), None


def objectives(args: argparse.Namespace) -> list[tuple[str, str]]:
    """--objective METRIC[:min|max],... as [(metric, mode)]; validation accuracy first."""
    text = getattr(args, "objective", None) or f"{METRIC}:{MODE}"
    goals = []
    for item in text.split(","):
        name, _, mode = item.strip().partition(":")
        if name not in OBJECTIVE_METRICS:
            raise UsageError(
                f"--objective {text!r}: unknown metric {name!r}; known: {', '.join(OBJECTIVE_METRICS)}, "
                "e.g. --objective val_accuracy,param_count"
            )
        mode = mode or OBJECTIVE_METRICS[name]
        if mode not in ("min", "max"):
            raise UsageError(f"--objective {text!r}: {name}:{mode} must end in :min or :max (or neither)")
        goals.append((name, mode))
    if goals[0] != (METRIC, MODE):
        raise UsageError(
            f"--objective {text!r}: the first objective must be {METRIC}:{MODE} (ASHA, the confirmation stage "
            f"and the report rank trials by it); list costs after it, e.g. --objective {METRIC},param_count"
        )
    if len({n for n, _ in goals}) < len(goals):
        raise UsageError(f"--objective {text!r} names a metric twice; name each once")
    return goals


@dataclasses.dataclass(frozen=True)
class OptunaStudy:
    """Where the search's Optuna study lives: `spec`, a journal file on this machine or an RDB URL, under
    the experiment's name. A journal needs a local file system, so for a bucket it lives on the driver's
    disk and `remote` (on `fs`) is its copy in the experiment folder, written when the search phase ends,
    fails or is interrupted, and read back by --resume."""

    name: str
    spec: str
    remote: str | None = None
    fs: Any = None


def optuna_study(args: argparse.Namespace, exp: Experiment) -> OptunaStudy | None:
    """The search's study (none for --search grid, which asks Optuna nothing). Names its storage to a
    searcher Tune restores (optuna_search.STORAGE_ENV) and prints the command that opens it live."""
    import hashlib

    from search_spaces.optuna_search import STORAGE_ENV, open_storage

    url = getattr(args, "optuna_storage", None)
    if args.search == "grid":
        if url:
            raise UsageError("--optuna-storage: --search grid asks Optuna nothing; drop --optuna-storage")
        return None
    if url:
        try:
            names = {s.study_name for s in open_storage(url).get_all_studies()} if "://" in url else None
        except Exception as e:  # noqa: BLE001 - a bad URL, a missing DB driver, an unreachable server
            raise UsageError(f"--optuna-storage {url}: cannot open it ({type(e).__name__}: {e})") from None
        if names is None:
            raise UsageError(f"--optuna-storage {url!r}: expected an RDB URL such as sqlite:///optuna.db")
        if not args.resume and exp.name in names:
            raise UsageError(f"--optuna-storage {url} already holds a study {exp.name!r}; pick another --name")
        study = OptunaStudy(exp.name, url)
    elif not storage.is_uri(exp.uri):  # created in the experiment folder when the searcher opens it
        study = OptunaStudy(exp.name, storage.join(exp.path, JOURNAL_FILE))
    else:
        key = hashlib.sha1(exp.uri.encode()).hexdigest()[:8]
        local = Path(tempfile.gettempdir()) / "hpo-optuna" / f"{exp.name}-{key}" / JOURNAL_FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        remote = storage.join(exp.path, JOURNAL_FILE)
        study = OptunaStudy(exp.name, str(local), remote, exp.fs)
        if not args.resume:
            local.unlink(missing_ok=True)  # a journal of an earlier experiment under this name
        else:
            # A journal only grows, so the longer copy is the newer: the bucket's, unless this driver was
            # killed after its last upload and left a longer one here.
            info = exp.fs.get_file_info(remote)
            if info.type == pafs.FileType.File and (not local.exists() or local.stat().st_size < info.size):
                pafs.copy_files(remote, str(local), source_filesystem=exp.fs)
    os.environ[STORAGE_ENV] = study.spec
    shown = study.spec
    if url:  # never print a database password into a log
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
    print(f"Optuna study {study.name!r}; watch it live with: optuna-dashboard {shlex.quote(shown)}")
    return study


def upload_study(study: OptunaStudy | None) -> None:
    """Copy a local journal to the experiment folder in its bucket (see OptunaStudy)."""
    if study is None or study.remote is None or not Path(study.spec).exists():
        return
    try:
        pafs.copy_files(study.spec, study.remote, destination_filesystem=study.fs)
    except OSError as e:  # the tables still get written; the journal stays on this machine
        print(f"run_search.py: could not copy the Optuna journal to {study.remote} ({e}); it is at {study.spec}")


SCHEDULER_FLAGS = ("grace_period", "reduction_factor", "brackets", "stop_on")


def scheduler_settings(args: argparse.Namespace, space: SearchSpace, max_epochs: int) -> Any:
    """ASHA's settings: the space's, with --grace-period/--reduction-factor/--brackets/--stop-on over them."""
    from search_spaces.schedulers import resolve_settings

    given = {k: getattr(args, k, None) for k in SCHEDULER_FLAGS}
    if args.scheduler == "fifo" and any(v is not None for v in given.values()):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)
        raise UsageError(
            f"{flags} set ASHA's rungs; with --scheduler fifo nothing is stopped: drop them or use --scheduler asha"
        )
    try:
        return resolve_settings(space, max_epochs, **given)
    except ValueError as e:
        raise UsageError(f"--scheduler asha: {e.args[0]} (flags --grace-period, --brackets)") from None


def build_scheduler(kind: str, asha: Any, max_epochs: int) -> Any:
    from search_spaces import schedulers

    return schedulers.build_scheduler(kind, asha, max_epochs)


def reuse_workers(args: argparse.Namespace) -> bool:
    """Tune's actor reuse (DESIGN section 4), unless --fresh-workers: a warm worker skips the process
    start and TensorFlow import; trainables.runtime keeps its settings valid across trials."""
    return not getattr(args, "fresh_workers", False)


def trial_dirname(trial: Any) -> str:
    """Trial folders named by trial id alone: short, unique, and what the tables call them."""
    return str(trial.trial_id)


def search_incomplete(grid: Any, num_samples: int, search_alg: Any = None) -> bool:
    """True when Tune returned early (its SIGINT handler stops gracefully and returns): a trial
    still pending, running or paused, or fewer trials than asked for (a race: than it would run)."""
    from search_spaces.racing import search_incomplete as race_incomplete

    raced = race_incomplete(search_alg, grid)
    if raced is not None:
        return raced
    return bool(grid.num_terminated + grid.num_errors < max(len(grid), num_samples))


# ---- records -------------------------------------------------------------------------------------------


def provenance() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in ("tensorflow", "keras", "ray", "optuna"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    return {"git_sha": sha, "versions": versions}


def write_meta(
    args: argparse.Namespace,
    exp: Experiment,
    space: SearchSpace,
    dataset: str,
    max_epochs: int,
    num_samples: int,
    gpus: float,
    argv: list[str],
    meta_before: dict[str, Any],
    asha: Any = None,
) -> None:
    """experiment.json: what the tables need (knob declarations of plugins included) and everything
    --resume needs to rebuild this run with no other flags. A resume keeps the original record and notes
    when it was resumed and from what code."""
    from search_spaces import schedulers  # imports Ray: only once the checks have passed

    now = dt.datetime.now(dt.UTC).isoformat()
    if args.resume:
        meta = {**meta_before, "resumed": [*meta_before.get("resumed", []), {"at": now, "argv": argv, **provenance()}]}
    else:
        meta = {
            "experiment": exp.name,
            "space": space.name,
            "dataset": dataset,
            "max_epochs": max_epochs,
            "num_samples": num_samples,
            "seed": args.seed,
            "scheduler": args.scheduler,
            "search": args.search,
            "cpus_per_trial": args.cpus_per_trial,
            "gpus_per_trial": gpus,
            "argv": argv,
            "scheduler_settings": schedulers.record(args.scheduler, asha, max_epochs, METRIC, MODE),
            "objectives": [{"metric": m, "mode": d} for m, d in objectives(args)],
            "optuna_study": None
            if args.search == "grid"
            else {"name": exp.name, "storage": getattr(args, "optuna_storage", None) or JOURNAL_FILE},
            "config_version": CONFIG_VERSION,  # which defaults a params.json without a knob means
            "created_at": now,
            **provenance(),
            "plugins": list(args.plugin),
            "plugin_declarations": registry.plugin_declarations(),
            "args": {k: v for k, v in vars(args).items() if k != "resume"},
        }
    storage.write_text(exp.fs, storage.join(exp.path, storage.EXPERIMENT_FILE), json.dumps(meta, indent=2, default=str))


def resume_command(args: argparse.Namespace, name: str) -> str:
    cmd = ["python", "run_search.py", "--resume", "--name", name, "--storage-path", args.storage_path]
    if args.address:
        cmd += ["--address", args.address]
    if args.s3_endpoint:  # the bucket is unreachable without it
        cmd += ["--s3-endpoint", args.s3_endpoint]
    return shlex.join(cmd)


def export_best_effort(exp_uri: str) -> None:
    try:
        folder, trials, _ = export_tables(exp_uri)
        print(f"tables for the {trials.num_rows} trials so far: {folder}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - never hide the original failure behind this one
        if is_storage_full(e):
            return  # the caller's message says so, once
        print(f"run_search.py: could not write the tables ({e}); rebuild them later from {exp_uri}", file=sys.stderr)


def write_report(exp_uri: str) -> None:
    """The report (analysis.report) from the tables just written; a failure here never costs the tables
    or changes the exit code: `python -m analysis EXPERIMENT_DIR` rebuilds it."""
    try:
        from analysis.report import build_report

        print(f"report: {build_report(exp_uri)['folder']}/report.md")
    except Exception as e:  # noqa: BLE001 - the search's result is the tables; the report is derived
        print(
            f"run_search.py: warning: report not written ({type(e).__name__}: {e}); "
            f"rebuild it with: python -m analysis {exp_uri}",
            file=sys.stderr,
        )
