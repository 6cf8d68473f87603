"""The driver: checks the request, then runs one Ray Tune experiment per phase (search, then confirm),
and resumes them. run_search.py is its command line; docs/design.md draws the whole flow.

Read `run` top to bottom: the request is checked (driver.request: cheapest first; nothing is written
under --storage-path until every check has passed), the data is loaded and checked against what its
trials will ask of it (driver.data_checks), Ray is joined, the experiment is
locked and recorded (experiment.json), the phases run, and the tables and the report are written. No
module-level mutable state: the SIGTERM flag lives in a `StopSignal` the caller owns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shlex
from typing import Any

from analysis import selection
from analysis.tables import export_tables
from driver.data_checks import check_data
from driver.guards import (
    check_free,
    export_best_effort,
    hold_experiment,
    read_resumable,
    storage_full_stops,
    write_report,
)
from driver.record import record
from driver.request import Plan, Request, check_name, plan, resumed, use_s3_endpoint, with_absolute_plugins
from driver.signals import EXIT_ALL_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Interrupted, StopSignal
from driver.signals import sigterm_as_sigint as sigterm_as_sigint
from experiment import folder, storage
from experiment.errors import UsageError
from experiment.folder import Experiment
from tuning import cluster
from tuning.study import OptunaStudy, open_study, upload_study
from tuning.tune_settings import trainable
from tuning.tune_settings import trial_dirname as trial_dirname  # named so in tuner.pkl of older experiments

__all__ = ["EXIT_ALL_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Interrupted", "Request", "UsageError"]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One Ray Tune run of the experiment, in `<experiment>/<name>`."""

    name: str  # "search" or "confirm"
    num_samples: int
    search_alg: Any
    param_space: dict[str, Any] | None
    scheduler: Any
    restore: bool  # continue the run stored there (--resume) instead of starting it


def run(request: Request, given: frozenset[str], argv: list[str], stop: StopSignal) -> int:
    """The whole experiment; returns the exit code, raises UsageError or Interrupted. `given`: the
    settings the user typed (what --resume may not contradict)."""
    request = with_absolute_plugins(request)
    check_name(request.name)
    exp: Experiment | None = None
    before: dict[str, Any] = {}
    if request.resume:
        exp, before = resumable(request)
        request = resumed(request, given, before.get("args"), exp.uri)
    p = plan(request)
    use_s3_endpoint(request)
    exp = exp or folder.locate(request.storage_path, request.name or default_name(p))
    if not request.resume and exp.exists():
        check_free(exp)
        raise UsageError(f"experiment {exp.uri} already exists; pick another --name, or add --resume to continue it")
    study = None if request.search == "grid" else open_study(exp, request.optuna_storage, request.resume)
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
        return run_phases(request, p, exp, trial, study, stop, hint)


def run_phases(
    request: Request, p: Plan, exp: Experiment, trainable: Any, study: OptunaStudy | None, stop: StopSignal, hint: str
) -> int:
    """The search phase, then the confirmation of its best configurations; the tables and the report."""
    from tuning.schedulers import build_scheduler

    search_alg, param_space = searcher(request, p, study)
    scheduler = build_scheduler(request.scheduler, p.asha, p.max_epochs)
    try:
        search = Phase("search", p.num_samples, search_alg, param_space, scheduler, request.resume)
        run_phase(search, trainable, request, exp, stop, hint)
    finally:
        upload_study(study)
    _, trials, _ = export_tables(exp.uri)
    if request.confirm_top:
        confirm = confirm_phase(request, p, trials.to_pandas(), exp)
        if confirm is not None:
            run_phase(confirm, trainable, request, exp, stop, hint)
        _, trials, _ = export_tables(exp.uri)
        print("\n".join(selection.confirmed_lines(trials.to_pandas())))
    lines, all_failed = selection.outcome(trials.to_pandas(), exp.tables)
    print("\n".join(lines))
    write_report(exp.uri)
    return EXIT_ALL_FAILED if all_failed else EXIT_OK


def run_phase(phase: Phase, trainable: Any, request: Request, exp: Experiment, stop: StopSignal, hint: str) -> None:
    """Build the phase's Tuner (or restore it) and run it. Ctrl-C, SIGTERM or a crash still leave the
    tables of what is finished."""
    from tuning.tune_settings import build_tuner, restore_tuner

    path = storage.join(exp.root, phase.name)
    if phase.restore:
        tuner = restore_tuner(path, trainable)
    else:
        tuner = build_tuner(
            trainable,
            name=phase.name,
            storage_path=exp.root,
            num_samples=phase.num_samples,
            search_alg=phase.search_alg,
            scheduler=phase.scheduler,
            param_space=phase.param_space,
            max_concurrent=request.max_concurrent,
            reuse_actors=not request.fresh_workers,
            keep_checkpoints=request.keep_checkpoints,
            max_failures=request.max_failures,
            verbose=request.verbosity,
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


def searcher(request: Request, p: Plan, study: OptunaStudy | None) -> tuple[Any, dict[str, Any] | None]:
    """The search phase's (search_alg, param_space): a grid whose cells race their seeds (--repeats
    auto), else tuning.optuna_search's Optuna, random or grid searcher."""
    if request.search == "grid" and p.race is not None:
        from tuning.racing import grid_race

        return grid_race(p.space.cells(p.cell_filter), p.fixed, p.race), None
    from tuning.optuna_search import build_search

    return build_search(
        request.search,
        p.space,
        p.fixed,
        seed=request.seed,
        repeats=int(request.repeats) if p.race is None else 0,
        cells=p.cell_filter,
        objectives=p.objectives,
        study=study,
    )


def confirm_phase(request: Request, p: Plan, trials: Any, exp: Experiment) -> Phase | None:
    """The confirmation run: the best configs as fixed points, FIFO, full budget (analysis.selection)."""
    from ray.tune.schedulers import FIFOScheduler

    from tuning.optuna_search import fixed_configs_search

    race, max_epochs = p.race, p.max_epochs
    configs = selection.confirm_configs(trials, request.confirm_top, 1 if race else int(request.repeats), max_epochs)
    if not configs:
        print("confirmation skipped: no search trial finished without error")
        return None
    restore = request.resume and exp.exists("confirm", "tuner.pkl")
    if race is not None:  # --repeats auto: the configs race seed by seed (tuning.racing)
        from tuning.racing import confirm_race, max_trials

        racer = confirm_race(configs, race)
        print(f"\nracing the best {len(configs)} configs, {race.min_repeats} to {race.max_repeats} seeds each")
        return Phase("confirm", max_trials(racer), racer, None, FIFOScheduler(), restore)
    first = configs[0]["seed"]
    print(
        f"\nconfirming the best {len(configs) // int(request.repeats)} configs, {request.repeats} seeds each "
        f"(seeds {first}..{first + int(request.repeats) - 1}), {max_epochs} epochs"
    )
    search_alg, param_space = fixed_configs_search(configs)
    return Phase("confirm", len(configs), search_alg, param_space, FIFOScheduler(), restore)


# ---- the steps `run` names ----------------------------------------------------------------------------


def resumable(request: Request) -> tuple[Experiment, dict[str, Any]]:
    """The experiment --resume continues, free and resumable, and its record."""
    if not request.name:
        raise UsageError("--resume needs --name NAME of the experiment to continue")
    use_s3_endpoint(request)
    exp = folder.locate(request.storage_path, request.name)
    check_free(exp)
    return exp, read_resumable(exp)


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


def search_incomplete(grid: Any, num_samples: int, search_alg: Any = None) -> bool:
    """True when Tune returned early (its SIGINT handler stops gracefully and returns): a trial
    still pending, running or paused, or fewer trials than asked for (a race: than it would run)."""
    from tuning.racing import search_incomplete as race_incomplete

    raced = race_incomplete(search_alg, grid)
    if raced is not None:
        return raced
    return bool(grid.num_terminated + grid.num_errors < max(len(grid), num_samples))
