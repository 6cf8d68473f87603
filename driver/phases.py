"""The phases of an experiment, each one Ray Tune run in its own folder of the experiment: the search
(`search/`; on --resume with a larger --num-samples one more run, an extension: `search-2/`, ...), then
the confirmation of its best configurations with new seeds (`confirm/`, `confirm-2/` when asked afresh),
then the tables and the report. driver.run builds the `PhaseContext` they all run with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from analysis import selection
from analysis.tables import export_tables, phase_of, phase_runs, run_name
from driver.guards import export_best_effort, write_report
from driver.request import Plan, Request
from driver.signals import EXIT_ALL_FAILED, EXIT_OK, Interrupted, StopSignal
from experiment import folder, storage
from experiment.folder import Experiment
from tuning.study import OptunaStudy, upload_study


@dataclasses.dataclass
class Runs:
    """What the phases need beyond the request: each Ray Tune run's trial count (experiment.json `runs`),
    the --warm-start points of a new search, and whether the confirmation is asked afresh on --resume."""

    targets: dict[str, int]
    warm: list[Any]  # tuning.warm_start.WarmPoint
    confirm_afresh: bool = False


@dataclasses.dataclass(frozen=True)
class PhaseContext:
    """What every phase runs with: the checked request and its plan, the experiment, the trainable (the
    data in Ray's object store), the Optuna study (None: a grid or PBT asks none), the stop signal, the
    resume command an interruption prints, and the runs so far (`runs` gains each run as it starts)."""

    request: Request
    plan: Plan
    exp: Experiment
    trainable: Any
    study: OptunaStudy | None
    stop: StopSignal
    hint: str
    runs: Runs


@dataclasses.dataclass(frozen=True)
class Phase:
    """One Ray Tune run of the experiment, in `<experiment>/<name>`."""

    name: str  # the run's folder: "search" or "confirm", or "search-2", ... for a phase run again
    num_samples: int
    search_alg: Any
    param_space: dict[str, Any] | None
    scheduler: Any
    restore: bool  # continue the run stored there (--resume) instead of starting it


def run_phases(ctx: PhaseContext) -> int:
    """The search phase, then the confirmation of its best configurations; the tables and the report."""
    request = ctx.request
    try:
        extended = run_search(ctx)
    finally:
        upload_study(ctx.study)
    _, trials, _ = export_tables(ctx.exp.uri)
    if request.confirm_top:
        afresh = ctx.runs.confirm_afresh or extended or search_ran_after_confirm(ctx.runs.targets)
        confirm = confirm_phase(request, ctx.plan, trials.to_pandas(), ctx.exp, afresh)
        if confirm is not None:
            run_phase(ctx, confirm)
        _, trials, _ = export_tables(ctx.exp.uri)
        print("\n".join(selection.confirmed_lines(trials.to_pandas())))
    lines, all_failed = selection.outcome(trials.to_pandas(), ctx.exp.tables)
    print("\n".join(lines))
    write_report(ctx.exp.uri)
    return EXIT_ALL_FAILED if all_failed else EXIT_OK


def run_search(ctx: PhaseContext) -> bool:
    """The search phase: a new run; on --resume the newest run continued and, where --num-samples asks for
    more trials than the phase holds, one more run of the difference (an extension; True when one ran).
    The extension's searcher opens the same Optuna study, so it samples knowing every earlier trial."""
    request, p, exp = ctx.request, ctx.plan, ctx.exp
    search_alg, param_space = searcher(request, p, ctx.study, [(w.params, w.origin) for w in ctx.runs.warm])
    if not request.resume:
        run_phase(ctx, Phase("search", p.num_samples, search_alg, param_space, search_scheduler(ctx), False))
        return False
    # A run folder without tuner.pkl: Tune never started it (a driver killed just before); run it anew.
    names = [n for n in phase_runs(exp.fs, exp.root, "search") if exp.exists(n, "tuner.pkl")]
    last = names[-1]
    run_phase(ctx, Phase(last, ctx.runs.targets.get(last, p.num_samples), search_alg, param_space, None, True))
    if request.search == "grid":
        return False
    _, trials, _ = export_tables(exp.uri)
    have = int((trials.column("phase").to_pandas() == "search").sum())
    more = p.num_samples - have
    if more <= 0:
        return False
    name = run_name("search", len(names) + 1)
    print(f"\nextending the search by {more} trials to {p.num_samples}; its searcher knows the {have} before them")
    search_alg, param_space = searcher(request, p, ctx.study)
    run_phase(ctx, Phase(name, more, search_alg, param_space, search_scheduler(ctx), False))
    return True


def search_scheduler(ctx: PhaseContext) -> Any:
    """A new search run's trial scheduler: ASHA, FIFO or PBT (tuning.schedulers)."""
    from tuning.schedulers import build_scheduler

    p = ctx.plan
    interval = ctx.request.perturbation_interval
    return build_scheduler(ctx.request.scheduler, p.asha, p.max_epochs, space=p.space, perturbation_interval=interval)


def search_ran_after_confirm(targets: dict[str, int]) -> bool:
    """Whether the newest search run started after the newest confirmation run (experiment.json `runs`
    keeps their order): an extension interrupted before its confirmation, whose resume must confirm the
    extended search afresh rather than continue the confirmation of the search before it."""
    last = {phase_of(name): i for i, name in enumerate(targets)}  # each phase's newest run, by position
    return "search" in last and "confirm" in last and last["search"] > last["confirm"]


def run_phase(ctx: PhaseContext, phase: Phase) -> None:
    """Build the phase's Tuner (a new run is first noted in experiment.json `runs`, with its trial count:
    what a resume of it expects), or restore it, and run it. Ctrl-C, SIGTERM or a crash still leave the
    tables of what is finished."""
    from tuning.tune_settings import build_tuner, restore_tuner

    request, exp = ctx.request, ctx.exp
    path = storage.join(exp.root, phase.name)
    if phase.restore:
        tuner = restore_tuner(path, ctx.trainable)
    else:
        ctx.runs.targets[phase.name] = phase.num_samples
        folder.note_runs(exp, ctx.runs.targets)
        tuner = build_tuner(
            ctx.trainable,
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
        if ctx.stop.terminated or search_incomplete(grid, phase.num_samples, phase.search_alg):
            raise Interrupted(ctx.hint)
    except BaseException as e:
        export_best_effort(exp.uri)  # the tables can always be rebuilt later: analysis.tables
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(ctx.hint) from None
        raise


def loggers(request: Request, exp: Experiment, run: str) -> list[Any]:
    """The per-result loggers of a run: the ones the tables read, and MLflow's with --mlflow-uri."""
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
    from tuning.optuna_search import fixed_configs_search
    from tuning.schedulers import FIFO

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
        return Phase(name, max_trials(racer), racer, None, FIFO(), restore)
    first = configs[0]["seed"]
    print(
        f"\nconfirming the best {len(configs) // int(request.repeats)} configs, {request.repeats} seeds each "
        f"(seeds {first}..{first + int(request.repeats) - 1}), {max_epochs} epochs"
    )
    search_alg, param_space = fixed_configs_search(configs)
    return Phase(name, len(configs), search_alg, param_space, FIFO(), restore)


def search_incomplete(grid: Any, num_samples: int, search_alg: Any = None) -> bool:
    """True when Tune returned early (its SIGINT handler stops gracefully and returns): a trial
    still pending, running or paused, or fewer trials than asked for (a race: than it would run)."""
    from tuning.racing import search_incomplete as race_incomplete

    raced = race_incomplete(search_alg, grid)
    if raced is not None:
        return raced
    return bool(grid.num_terminated + grid.num_errors < max(len(grid), num_samples))
