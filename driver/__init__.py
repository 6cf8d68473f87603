"""The driver: checks the request, then runs one Ray Tune experiment per phase (search, then confirm),
and resumes them. run_search.py is its command line; docs/design.md draws the whole flow.

Read `run` top to bottom: the request is checked (driver.request: cheapest first; nothing is written
under --storage-path until every check has passed; driver.resume merges a stored one on --resume), the
data is loaded and checked against what its trials will ask of it (driver.data_checks), Ray is joined,
the experiment is locked and recorded (experiment.json), the phases run (driver.phases), and the tables
and the report are written. No module-level mutable state: the SIGTERM flag lives in a `StopSignal` the
caller owns.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from typing import Any

from driver import resume
from driver.data_checks import check_data
from driver.guards import check_free, hold_experiment, storage_full_stops
from driver.phases import PhaseContext, Runs, run_phases
from driver.record import record
from driver.request import Plan, Request, plan, with_absolute_plugins
from driver.signals import EXIT_ALL_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Interrupted, StopSignal
from driver.signals import sigterm_as_sigint as sigterm_as_sigint
from driver.storage_checks import check_name, use_s3_endpoint
from experiment import folder, storage
from experiment.errors import UsageError
from experiment.folder import Experiment
from tuning import cluster
from tuning.study import open_study
from tuning.tune_settings import trainable
from tuning.tune_settings import trial_dirname as trial_dirname  # named so in tuner.pkl of older experiments

__all__ = ["EXIT_ALL_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Interrupted", "Request", "UsageError"]


def run(request: Request, given: frozenset[str], argv: list[str], stop: StopSignal) -> int:
    """The whole experiment; returns the exit code, raises UsageError or Interrupted. `given`: the
    settings the user typed (what --resume may not contradict)."""
    request = with_absolute_plugins(request)
    check_name(request.name)
    exp: Experiment | None = None
    before: dict[str, Any] = {}
    if request.resume:
        exp, before = resume.resumable(request)
        request = resume.resumed(request, given, before.get("args"), exp.uri)
    p = plan(request)
    if exp is not None:
        resume.check_extension(p, given, before, exp.uri)
    warm = warm_points(request, p)
    use_s3_endpoint(request.storage_path, request.s3_endpoint)
    exp = exp or folder.locate(request.storage_path, request.name or default_name(p))
    if not request.resume and exp.exists():
        check_free(exp)
        raise UsageError(f"experiment {exp.uri} already exists; pick another --name, or add --resume to continue it")
    asks_optuna = request.search != "grid" and request.scheduler != "pbt"  # PBT: a population, no searcher
    study = open_study(exp, request.optuna_storage, request.resume) if asks_optuna else None
    data = load_data(p.dataset, request.data_dir)
    check_data(p, data, request.search)  # a user's own data, before Ray starts (driver.data_checks)
    cluster.connect_ray(request.address, os.environ, request.plugin, request.verbose > 0)
    gpus = cluster.trial_gpus(request.gpus_per_trial, p.space.gpus_per_trial, cluster.cluster_gpus())
    cluster.check_resources(request.cpus_per_trial, gpus, request.address is not None)
    stop.install()  # again: ray.init installs its own SIGTERM handler (sys.exit)
    hint = request.resume_command(exp.name)
    # The lock is released however this ends; a killed driver's, see experiment.lock.
    with storage_full_stops(exp, hint), hold_experiment(exp, request.resume):
        record(request, p, exp, gpus, argv, before)
        if study is not None:
            print(f"Optuna study {study.name!r}; watch it live with: {study.dashboard_command()}")
        # Ray Tune's own hint names its staging folder under /tmp/ray; every trial's events are here.
        print(f"TensorBoard: tensorboard --logdir {shlex.quote(exp.uri)}")
        trial = trainable(
            data,
            cpus=request.cpus_per_trial,
            gpus=gpus,
            checkpoint_every=request.checkpoint_every,
            plugins=request.plugin,
            shipped=request.address is not None,
        )
        runs = Runs(resume.run_targets(p, before), warm, resume.confirm_afresh(request, before))
        return run_phases(PhaseContext(request, p, exp, trial, study, stop, hint, runs))


# ---- the steps `run` names ----------------------------------------------------------------------------


def warm_points(request: Request, p: Plan) -> list[Any]:
    """--warm-start: the best configurations of the experiments named, as points of this search's space
    (tuning.warm_start), read before anything is written; none on --resume (the study holds them)."""
    if not request.warm_start or request.resume:
        return []
    from analysis.tables import build_tables
    from tuning.warm_start import warm_points as points

    experiments = {}
    for ref in request.warm_start:
        parent, _, name = ref.rstrip("/").rpartition("/")  # a name in --storage-path, or a folder's path
        source = folder.locate(parent or request.storage_path, name)
        if not source.exists(storage.EXPERIMENT_FILE):
            raise UsageError(
                f"--warm-start {ref}: no experiment {source.uri} (no {storage.EXPERIMENT_FILE}); name one in "
                "--storage-path or give its folder"
            )
        trials, _ = build_tables(source.uri)  # from its folder: tables of a run still going may lag
        experiments[source.name] = trials.to_pandas()
    try:
        return points(p.space, experiments, request.warm_start_top)
    except ValueError as e:
        raise UsageError(str(e)) from None


def default_name(p: Plan) -> str:
    return f"{p.space.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"


def load_data(dataset: str, data_dir: str | None) -> Any:
    from trainables.data import DatasetUnavailable, load_dataset

    try:
        return load_dataset(dataset, data_dir)
    except DatasetUnavailable as e:
        raise UsageError(
            f"dataset {dataset!r} is unavailable: {e}. Point --data-dir at a folder holding it "
            "in its standard format, or run offline with --dataset digits"
        ) from None
