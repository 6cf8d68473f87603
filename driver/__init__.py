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

    name: str  # the run's folder: "search" or "confirm", or "search-2", ... for a phase run again
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
    if request.resume and "num_samples" in given and p.num_samples < int(before.get("num_samples") or 0):
        raise UsageError(
            f"--num-samples {p.num_samples}: {exp.uri if exp else request.name} asked for {before['num_samples']} "
            "trials already; --resume can extend a search (a larger --num-samples), never shrink it"
        )
    warm = warm_points(request, p)
    use_s3_endpoint(request)
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
        stored = before.get("args") or {}
        afresh = request.resume and any(stored.get(k) != getattr(request, k) for k in ("confirm_top", "repeats"))
        runs = dict(before.get("runs") or {"search": before.get("num_samples", p.num_samples)})
        return run_phases(request, p, exp, trial, study, stop, hint, Runs(runs, warm, afresh))


@dataclasses.dataclass
class Runs:
    """What the phases need beyond the request: each Ray Tune run's trial count (experiment.json `runs`),
    the --warm-start points of a new search, and whether the confirmation is asked afresh on --resume."""

    targets: dict[str, int]
    warm: list[Any]  # tuning.warm_start.WarmPoint
    confirm_afresh: bool = False


def run_phases(
    request: Request,
    p: Plan,
    exp: Experiment,
    trainable: Any,
    study: OptunaStudy | None,
    stop: StopSignal,
    hint: str,
    runs: Runs,
) -> int:
    """The search phase, then the confirmation of its best configurations; the tables and the report."""
    try:
        extended = run_search(request, p, exp, trainable, study, stop, hint, runs)
    finally:
        upload_study(study)
    _, trials, _ = export_tables(exp.uri)
    if request.confirm_top:
        afresh = runs.confirm_afresh or extended or search_ran_after_confirm(runs.targets)
        confirm = confirm_phase(request, p, trials.to_pandas(), exp, afresh)
        if confirm is not None:
            if not confirm.restore:
                note_run(exp, runs, confirm.name, confirm.num_samples)
            run_phase(confirm, trainable, request, exp, stop, hint)
        _, trials, _ = export_tables(exp.uri)
        print("\n".join(selection.confirmed_lines(trials.to_pandas())))
    lines, all_failed = selection.outcome(trials.to_pandas(), exp.tables)
    print("\n".join(lines))
    write_report(exp.uri)
    return EXIT_ALL_FAILED if all_failed else EXIT_OK


def run_search(
    request: Request,
    p: Plan,
    exp: Experiment,
    trainable: Any,
    study: OptunaStudy | None,
    stop: StopSignal,
    hint: str,
    runs: Runs,
) -> bool:
    """The search phase: a new run; on --resume the newest run continued and, where --num-samples asks for
    more trials than the phase holds, one more run of the difference (an extension; True when one ran).
    The extension's searcher opens the same Optuna study, so it samples knowing every earlier trial."""
    from analysis.tables import phase_runs, run_name
    from tuning.schedulers import build_scheduler

    search_alg, param_space = searcher(request, p, study, [(w.params, w.origin) for w in runs.warm])
    if not request.resume:
        note_run(exp, runs, "search", p.num_samples)
        scheduler = build_scheduler(
            request.scheduler,
            p.asha,
            p.max_epochs,
            space=p.space,
            perturbation_interval=request.perturbation_interval,
        )
        run_phase(
            Phase("search", p.num_samples, search_alg, param_space, scheduler, False),
            trainable,
            request,
            exp,
            stop,
            hint,
        )
        return False
    # A run folder without tuner.pkl: Tune never started it (a driver killed just before); run it anew.
    names = [n for n in phase_runs(exp.fs, exp.root, "search") if exp.exists(n, "tuner.pkl")]
    last = names[-1]
    run_phase(
        Phase(last, runs.targets.get(last, p.num_samples), search_alg, param_space, None, True),
        trainable,
        request,
        exp,
        stop,
        hint,
    )
    if request.search == "grid":
        return False
    _, trials, _ = export_tables(exp.uri)
    have = int((trials.column("phase").to_pandas() == "search").sum())
    more = p.num_samples - have
    if more <= 0:
        return False
    name = run_name("search", len(names) + 1)
    print(f"\nextending the search by {more} trials to {p.num_samples}; its searcher knows the {have} before them")
    search_alg, param_space = searcher(request, p, study)
    note_run(exp, runs, name, more)
    scheduler = build_scheduler(
        request.scheduler,
        p.asha,
        p.max_epochs,
        space=p.space,
        perturbation_interval=request.perturbation_interval,
    )
    run_phase(Phase(name, more, search_alg, param_space, scheduler, False), trainable, request, exp, stop, hint)
    return True


def search_ran_after_confirm(targets: dict[str, int]) -> bool:
    """Whether the newest search run started after the newest confirmation run (experiment.json `runs`
    keeps their order): an extension interrupted before its confirmation, whose resume must confirm the
    extended search afresh rather than continue the confirmation of the search before it."""
    from analysis.tables import phase_of

    order = [phase_of(name) for name in targets]
    if "confirm" not in order or "search" not in order:
        return False
    return max(i for i, ph in enumerate(order) if ph == "search") > max(
        i for i, ph in enumerate(order) if ph == "confirm"
    )


def note_run(exp: Experiment, runs: Runs, name: str, num_samples: int) -> None:
    """experiment.json's `runs` gains a Ray Tune run and its trial count (what a resume of it expects)."""
    runs.targets[name] = num_samples
    folder.note_runs(exp, runs.targets)


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
            keep_checkpoints=request.checkpoints_kept,
            worker_memory_growth=request.worker_memory_growth,
            max_failures=request.max_failures,
            verbose=request.verbosity,
            callbacks=loggers(request, exp, phase.name),
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


def loggers(request: Request, exp: Experiment, run: str) -> list[Any]:
    """The per-result loggers of a run: the ones the tables read, and MLflow's with --mlflow-uri."""
    from analysis.tables import phase_of
    from tuning.tune_settings import result_loggers

    if request.mlflow_uri is None:
        return result_loggers()
    from tuning.mlflow_logging import TrialRunsLogger

    return [*result_loggers(), TrialRunsLogger(request.mlflow_uri, experiment=exp.name, phase=phase_of(run))]


def searcher(
    request: Request, p: Plan, study: OptunaStudy | None, warm: list[tuple[dict[str, Any], str]] | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """The search phase's (search_alg, param_space): a grid whose cells race their seeds (--repeats
    auto), a population drawn from the space for population-based training, else tuning.optuna_search's
    Optuna, random or grid searcher (`warm`: configurations Optuna asks first, --warm-start)."""
    if request.scheduler == "pbt" and request.search != "grid":
        from tuning.optuna_search import fixed_configs_search, population

        return fixed_configs_search(population(p.space, p.fixed, p.num_samples, request.seed))
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
        warm=warm or (),
    )


def confirm_phase(request: Request, p: Plan, trials: Any, exp: Experiment, afresh: bool = False) -> Phase | None:
    """The confirmation run: the best configs as fixed points, FIFO, full budget (analysis.selection).
    On --resume the newest confirmation run continues, unless the confirmation is asked `afresh` (an
    extended search, or other --confirm-top/--repeats): then a new run confirms what no earlier one ran."""
    from ray.tune.schedulers import FIFOScheduler

    from analysis.tables import phase_runs, run_name
    from tuning.optuna_search import fixed_configs_search

    race, max_epochs = p.race, p.max_epochs
    configs = selection.confirm_configs(trials, request.confirm_top, 1 if race else int(request.repeats), max_epochs)
    if not configs:
        print("confirmation skipped: no search trial finished without error")
        return None
    names = phase_runs(exp.fs, exp.root, "confirm")
    restore = request.resume and bool(names) and not afresh and exp.exists(names[-1], "tuner.pkl")
    name = names[-1] if restore else run_name("confirm", len(names) + 1)
    if not restore and names:  # afresh: no trial twice, so no configuration and seed an earlier run confirmed
        configs = selection.not_confirmed(configs, trials)
        if not configs:
            print("confirmation: every one of the best configs was confirmed with these seeds already")
            return None
    if race is not None:  # --repeats auto: the configs race seed by seed (tuning.racing)
        from tuning.racing import confirm_race, max_trials

        racer = confirm_race(configs, race)
        print(f"\nracing the best {len(configs)} configs, {race.min_repeats} to {race.max_repeats} seeds each")
        return Phase(name, max_trials(racer), racer, None, FIFOScheduler(), restore)
    first = configs[0]["seed"]
    print(
        f"\nconfirming the best {len(configs) // int(request.repeats)} configs, {request.repeats} seeds each "
        f"(seeds {first}..{first + int(request.repeats) - 1}), {max_epochs} epochs"
    )
    search_alg, param_space = fixed_configs_search(configs)
    return Phase(name, len(configs), search_alg, param_space, FIFOScheduler(), restore)


# ---- the steps `run` names ----------------------------------------------------------------------------


def resumable(request: Request) -> tuple[Experiment, dict[str, Any]]:
    """The experiment --resume continues, free and resumable, and its record."""
    if not request.name:
        raise UsageError("--resume needs --name NAME of the experiment to continue")
    use_s3_endpoint(request)
    exp = folder.locate(request.storage_path, request.name)
    check_free(exp)
    return exp, read_resumable(exp)


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


def search_incomplete(grid: Any, num_samples: int, search_alg: Any = None) -> bool:
    """True when Tune returned early (its SIGINT handler stops gracefully and returns): a trial
    still pending, running or paused, or fewer trials than asked for (a race: than it would run)."""
    from tuning.racing import search_incomplete as race_incomplete

    raced = race_incomplete(search_alg, grid)
    if raced is not None:
        return raced
    return bool(grid.num_terminated + grid.num_errors < max(len(grid), num_samples))
