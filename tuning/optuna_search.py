"""The driver's searchers: Optuna that learns from the right fidelity, and fixed configs for grids and repeats.

Ray Tune's stock OptunaSearch reports intermediate values at `training_iteration`
and tells Optuna that a trial ASHA stopped after one epoch is COMPLETE, so TPE
ranks one-epoch and full-budget scores as equals. `FidelityOptunaSearch` reports
each epoch's metric at step = epoch and tells Optuna a trial that ended before the
full budget (ASHA or patience) was PRUNED, so Optuna's value for it is its last
intermediate value at its own step. Imports Ray and Optuna, never TensorFlow.

The study persists in an Optuna storage (`storage_spec`: a journal file path, or an RDB URL), written as
trials are asked, report and end, so `optuna-dashboard` and `optuna.load_study` can open it while the
search runs. Tune pickles the searcher for --resume; the pickle holds the trials' numbers, not the study,
and the restored searcher re-attaches to the storage (the driver names the current location in
STORAGE_ENV, since an experiment folder may have moved), so the study is never copied or duplicated.

Learning across runs of one study: a search extended with --resume --num-samples is a new Tune run whose
searcher opens the same study, so the sampler sees every earlier trial; each Optuna trial records how many
trials of its study had finished when it was asked (user attr FINISHED_BEFORE), which says what it could
learn from. --warm-start queues earlier configurations with Optuna's enqueue_trial (tuning.warm_start):
asked first, each hands its origin to the trial's config.

One number per trial: Optuna scores a trial by its best validation accuracy so far, as ASHA compares it
(`stop_on` 'best', the default) and the report ranks by it (`best_val_accuracy`): the intermediate value
at step e is the best epoch up to e, a COMPLETE trial's value its best epoch, a PRUNED one's the best
before it stopped. The study says so in its user attrs (VALUE_ATTRS), which optuna-dashboard shows.

Several objectives (metric and mode lists): the study is multi-objective (TPE and random sampling both
handle it); Optuna takes no intermediate values there, so the epochs go unreported and a trial that
ended before its full budget is PRUNED without values; a full-budget trial is COMPLETE with one value
per objective.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search_spaces.base import SearchSpace
from trainables.config import WARM_START, TrialConfig
from tuning.tpe import BoundedTPESampler, FinishedTrials

EPOCH = "epoch"  # the trainable's 1-based epoch count, ASHA's time unit
logger = logging.getLogger(__name__)
# Where the study lives now (journal path or RDB URL), set by the driver before it restores a searcher.
STORAGE_ENV = "HPO_OPTUNA_STORAGE"
# Searcher attributes that hold the live study; never pickled (see save).
_LIVE = ("_storage", "_ot_study", "_ot_trials")
# Trial user attrs: how many trials of the study had finished (COMPLETE or PRUNED) when it was asked, and
# where a queued configuration came from (tuning.warm_start).
FINISHED_BEFORE = "finished_before"
ORIGIN_ATTR = WARM_START
# The study's user attrs: which number a trial's value is (module docstring).
VALUE_ATTRS = {
    "value": "best validation accuracy so far (val_accuracy, maximum over the epochs reported)",
    "value_why": "the one number per trial: ASHA compares it at its rungs (stop_on 'best', the default), the "
    "report ranks trials by it (best_val_accuracy), and Optuna is told the same: intermediate value at step e = "
    "best epoch up to e, a COMPLETE trial's value = its best epoch, a PRUNED one's = its best before it stopped",
}


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """An RDB URL (`sqlite:///x.db`, `postgresql://...`) as an RDBStorage, anything else as the path of a
    journal file (created if missing): the format `optuna-dashboard PATH` opens."""
    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    from tuning.journal_storage import open_journal

    return open_journal(spec)


def define_with_fixed(trial: optuna.Trial, space: SearchSpace, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The space's define-by-run plus the run's fixed knobs (dataset, seed, budget).

    Module-level (not in run_search.py, which runs as __main__) so the searcher state Tune
    pickles for --resume can be unpickled by any process.
    """
    return {**(space.define(trial) or {}), **fixed}


class FidelityOptunaSearch(OptunaSearch):
    """OptunaSearch with intermediate values at step = epoch, early-stopped trials PRUNED, and its study
    in a persistent storage that a restored searcher re-attaches to."""

    def __init__(
        self,
        *args: Any,
        max_epochs: int | None = None,
        storage_spec: str | None = None,
        warm: Sequence[tuple[dict[str, Any], str]] = (),
        **kwargs: Any,
    ) -> None:
        if storage_spec:
            kwargs["storage"] = open_storage(storage_spec)
        self._warm = list(warm)  # (params, origin) queued in the new study before anything is asked
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._storage_spec = storage_spec
        self._reported: dict[str, set[int]] = {}  # trial id -> epochs already told to Optuna
        self._best: dict[str, float] = {}  # trial id -> best value of the first metric so far
        self._finished = FinishedTrials()  # the study's, kept up to date at each ask

    @property
    def study(self) -> optuna.Study | None:
        """The Optuna study: every trial with its state, params and intermediate values."""
        self._attach()
        return self._ot_study

    def _setup_study(self, mode: str | list) -> None:
        """Ray's study setup, then the --warm-start configurations queued (a new searcher only: a restored
        one unpickles without setting up, and its study holds them already)."""
        super()._setup_study(mode)
        study = self._ot_study
        assert study is not None  # just created
        for params, origin in self._warm:
            study.enqueue_trial(params, user_attrs={ORIGIN_ATTR: origin}, skip_if_exists=True)
        self._warm = []

    def _improve(self, trial_id: str, value: float) -> float:
        """The best first-metric value of the trial so far, `value` included (max, or min for mode min)."""
        mode = self._mode[0] if isinstance(self._mode, list) else self._mode
        seen = self._best.get(trial_id)
        best = value if seen is None else (min(seen, value) if mode == "min" else max(seen, value))
        self._best[trial_id] = best
        return best

    def _describe(self, study: optuna.Study) -> None:
        """The study's user attrs say what a trial's value is (once; optuna-dashboard shows them)."""
        if any(study.user_attrs.get(k) != v for k, v in VALUE_ATTRS.items()):
            for key, text in VALUE_ATTRS.items():
                study.set_user_attr(key, text)

    @property
    def _metrics(self) -> list[str]:
        return list(self._metric) if isinstance(self._metric, list) else [str(self._metric)]

    # ---- persistence: Tune pickles the searcher (tuner.pkl, searcher-state-*.pkl) -------------------

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_finished": FinishedTrials()}  # re-read from the study after a restore
        if state.get("_storage_spec"):
            # The study stays in its storage; the pickle names each Tune trial's Optuna trial number.
            state["_trial_numbers"] = {tid: t.number for tid, t in (state.get("_ot_trials") or {}).items()}
            for key in _LIVE:
                state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_finished", FinishedTrials())  # a searcher pickled before it kept one
        if state.get("_storage_spec"):
            self._storage = self._ot_study = None
            self._ot_trials = {}

    def save(self, checkpoint_path: str) -> None:
        # Tune's save_to_dir hands a temporary name and renames it over the state file itself; its copy to a
        # local storage is atomic through tuning.atomic_storage.
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        try:
            with open(checkpoint_path, "rb") as f:
                state = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            # Tune copied its snapshot to the storage file by file, in place, before tuning.atomic_storage: a
            # driver killed mid-copy left this file cut short (an empty one was seen), and experiments written
            # then may still hold one. Tune would log the failed restore and go on
            # around a searcher that asks nothing, waiting forever. With the study in a storage, what the
            # pickle adds is rebuilt from it instead: `self` is the searcher as the run was built (tuner.pkl),
            # and each Optuna trial names its Tune trial (user attr "trial_id"), so the trials of Tune's snapshot
            # map back (one asked after it is failed as never run, as with a readable pickle).
            if not getattr(self, "_storage_spec", None):
                raise
            logger.warning(
                "the searcher's state %s cannot be read (%s: %s); rebuilt from the Optuna study",
                os.path.basename(checkpoint_path),
                type(e).__name__,
                e,
            )
            known = snapshot_trial_ids(os.path.dirname(checkpoint_path))
            state = {**self.__getstate__(), "_rebuild_for": known}  # _attach maps these trials from the study
        self.__setstate__(state)
        self._attach()

    def _attach(self) -> None:
        """Open the study in its storage (once) and map Tune's trials back to their Optuna trials.

        What the storage knows wins over the pickle, which may be older (Tune snapshots it every few
        seconds): a trial Optuna already finished is not told again, an epoch it already has is not
        reported again. A trial the storage holds as RUNNING that no Tune trial owns (asked after the
        last snapshot, before a crash) will never report: it is failed, with the reason as a user attr."""
        spec = getattr(self, "_storage_spec", None)
        if not spec or self._ot_study is not None:
            return
        self._storage = open_storage(os.environ.get(STORAGE_ENV) or spec)
        # Created afresh when the storage lost it (a bucket's journal copy from before any upload): Tune's
        # trials go on, and the study holds what happens from here.
        modes = self._mode if isinstance(self._mode, list) else [self._mode]
        study = optuna.create_study(
            study_name=self._study_name,
            storage=self._storage,
            sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
            directions=["minimize" if m == "min" else "maximize" for m in modes],
            load_if_exists=True,
        )
        self._ot_study = study  # type: ignore[assignment]  # OptunaSearch declares it None
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        numbers: dict[str, int] = self.__dict__.pop("_trial_numbers", {})
        if "_rebuild_for" in self.__dict__:  # the pickle was unreadable (restore): the trials that name a Tune trial
            known = self.__dict__.pop("_rebuild_for")
            named = {t.user_attrs["trial_id"]: n for n, t in by_number.items() if "trial_id" in t.user_attrs}
            numbers = {tid: n for tid, n in named.items() if known is None or tid in known}
        numbers = {tid: n for tid, n in numbers.items() if n in by_number}
        self._ot_trials = {t: optuna.trial.Trial(study, by_number[n]._trial_id) for t, n in numbers.items()}
        self._describe(study)
        for tid, n in numbers.items():
            if by_number[n].state.is_finished():
                self._completed_trials.add(tid)
            stored = by_number[n].intermediate_values
            self._reported.setdefault(tid, set()).update(stored)
            if stored:  # the running best, as the storage has it (intermediate values are running bests)
                self._improve(tid, max(stored.values()) if self._mode != "min" else min(stored.values()))
        owned = set(numbers.values())
        for t in by_number.values():
            if t.state == TrialState.RUNNING and t.number not in owned:
                self._storage.set_trial_user_attr(t._trial_id, "error", "asked before the driver stopped; never run")
                study.tell(t.number, state=TrialState.FAIL)

    # ---- Tune's Searcher API -----------------------------------------------------------------------

    def suggest(self, trial_id: str) -> dict | None:
        self._attach()
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        if self._ot_study is not None and not getattr(self, "_described", False):
            self._describe(self._ot_study)  # an in-memory study (no storage) too
            self._described = True
        if new and trial_id in self._ot_trials and self._ot_study is not None:
            ot_trial = self._ot_trials[trial_id]
            # The dashboard's link to trials.parquet and the trial folder, which Tune names by this id.
            ot_trial.set_user_attr("trial_id", trial_id)
            trials = self._ot_study._get_trials(deepcopy=False, use_cache=False)  # no filter of every trial
            ot_trial.set_user_attr(FINISHED_BEFORE, len(self._finished.update(trials).numbers))
            origin = ot_trial.user_attrs.get(ORIGIN_ATTR)
            if config is not None and origin:
                config = {**config, WARM_START: origin}
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._attach()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value, step = result.get(self._metrics[0]), result.get(EPOCH)
        if result.get("error") or value is None or step is None or not math.isfinite(value):
            return  # a diverged epoch: the trial ends as FAIL, not as a score
        # A trial restored from its checkpoint may replay an epoch Optuna already has.
        reported = self._reported.setdefault(trial_id, set())
        if int(step) in reported:
            return
        best = self._improve(trial_id, float(value))
        if len(self._metrics) > 1:
            reported.add(int(step))
            return  # Optuna keeps no intermediate values for a multi-objective study
        self._ot_trials[trial_id].report(best, int(step))
        reported.add(int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._attach()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        study = self._ot_study
        assert study is not None  # OptunaSearch creates it before it suggests any trial
        result = result or {}
        values = [result.get(m) for m in self._metrics]
        value, epochs = values[0], result.get(EPOCH)
        if error or result.get("error") or any(v is not None and not math.isfinite(v) for v in values):
            study.tell(ot_trial, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        # Tune hands a result the scheduler answered STOP (ASHA's rung, or max_t) only to this
        # method, never to on_trial_result: report it here, so the last epoch is not lost.
        if value is not None and epochs is not None:
            self.on_trial_result(trial_id, result)
        full = epochs is not None and (self._max_epochs is None or int(epochs) >= self._max_epochs)
        if value is not None and trial_id in self._best:
            values[0] = self._best[trial_id]  # the best epoch, not the last (module docstring)
        if full and all(v is not None for v in values):
            study.tell(ot_trial, [float(v) for v in values], state=TrialState.COMPLETE)
        elif full and value is not None:
            # A cost the trial could not measure (e.g. MACs of a layer without a rule): no point to place.
            missing = [m for m, v in zip(self._metrics, values, strict=True) if v is None]
            ot_trial.set_user_attr("error", f"no value for objective(s) {', '.join(missing)}")
            study.tell(ot_trial, state=TrialState.FAIL)
        else:
            # Ended before the full budget without error (ASHA, patience, or no result at all):
            # Optuna records its last intermediate value at its last step (single objective only).
            study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def snapshot_trial_ids(folder: str) -> set[str] | None:
    """The trial ids of Tune's newest experiment snapshot in `folder` (the one a resume restores: Ray 2.60's
    experiment_state-*.json, whose trial_data holds each trial's JSON state); None when none can be read."""
    states = sorted(glob.glob(os.path.join(folder, "experiment_state-*.json")))
    try:
        with open(states[-1]) as f:
            return {json.loads(entry[0])["trial_id"] for entry in json.load(f)["trial_data"]}
    except (IndexError, OSError, ValueError, KeyError, TypeError):
        return None


def build_optuna_search(
    space: SearchSpace,
    fixed: Mapping[str, Any],
    *,
    metric: str | list[str],
    mode: str | list[str],
    seed: int,
    random: bool,
    max_epochs: int,
    storage_spec: str | None = None,
    study_name: str | None = None,
    warm: Sequence[tuple[dict[str, Any], str]] = (),
) -> FidelityOptunaSearch:
    """The searcher; with `storage_spec` its study persists there under `study_name`. Lists of metrics
    and modes make it multi-objective (TPE and random sampling both support that). `warm`: (params, origin)
    of configurations it asks first (tuning.warm_start)."""
    import functools

    # TPE that models at most tuning.tpe.HISTORY finished trials: an ask's cost stays flat over many trials.
    sampler = optuna.samplers.RandomSampler(seed=seed) if random else BoundedTPESampler(seed=seed)
    return FidelityOptunaSearch(
        space=functools.partial(define_with_fixed, space=space, fixed=dict(fixed)),
        metric=metric,
        mode=mode,
        sampler=sampler,
        max_epochs=max_epochs,
        storage_spec=storage_spec,
        study_name=study_name,
        warm=warm,
    )


def full_configs(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each config completed to every TrialConfig field (validated; unknown keys fail loudly)."""
    return [TrialConfig.from_params(dict(c)).to_dict() for c in configs]


def fixed_configs_search(configs: Sequence[Mapping[str, Any]]) -> tuple[BasicVariantGenerator, dict[str, Any]]:
    """(searcher, param_space) that run exactly `configs`, one trial each, in order.

    Tune's own way to run given configs: BasicVariantGenerator's points_to_evaluate. Tune
    wants every key of a point declared in param_space, so each knob is declared as a choice
    among the values the points use; with num_samples = len(configs) nothing is sampled from it.
    """
    points = full_configs(configs)
    param_space = {name: tune.choice(sorted({p[name] for p in points}, key=repr)) for name in points[0]}
    return BasicVariantGenerator(points_to_evaluate=points), param_space


def population(space: SearchSpace, fixed: Mapping[str, Any], size: int, seed: int) -> list[dict[str, Any]]:
    """`size` configurations drawn at random from the space's define-by-run (seeded): the first population
    of population-based training, which then changes their knobs itself rather than asking a searcher."""
    sampler = optuna.samplers.RandomSampler(seed=seed)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a throwaway study: no "study created" line
    try:
        study = optuna.create_study(sampler=sampler)
        return [{**space.sample(study.ask()), **fixed} for _ in range(size)]
    finally:
        optuna.logging.set_verbosity(verbosity)


def grid_configs(
    space: SearchSpace, fixed: Mapping[str, Any], seed: int, repeats: int, where: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every cell of the space's grid (those matching `where`), `repeats` times with seeds seed, seed+1, ...

    Repeat-major: every cell once before any cell twice, so a search cut short still covers the grid.
    """
    cells = space.cells(where)
    return [{**cell, **fixed, "seed": seed + r} for r in range(max(1, repeats)) for cell in cells]


def build_search(
    kind: str,
    space: SearchSpace,
    fixed: Mapping[str, Any],
    *,
    seed: int,
    repeats: int = 0,
    cells: Mapping[str, str] | None = None,
    objectives: Sequence[tuple[str, str]] = (("val_accuracy", "max"),),
    study: Any = None,
    warm: Sequence[tuple[dict[str, Any], str]] = (),
) -> tuple[Any, dict[str, Any] | None]:
    """(search_alg, param_space) for --search `kind`: Optuna (TPE, or `random`) on the space's
    define-by-run, learning at step = epoch, its study in `study`'s storage (tuning.study.OptunaStudy);
    or, for `grid`, every cell of the space's grid matching `cells`, `repeats` times. Several
    `objectives` make the study multi-objective. (A grid that races its seeds, --repeats auto, is
    tuning.racing's grid_race.)"""
    if kind == "grid":
        return fixed_configs_search(grid_configs(space, fixed, seed, repeats, cells))
    several = len(objectives) > 1
    return build_optuna_search(
        space,
        fixed,
        metric=[m for m, _ in objectives] if several else objectives[0][0],
        mode=[d for _, d in objectives] if several else objectives[0][1],
        seed=seed,
        random=kind == "random",
        max_epochs=int(fixed["max_epochs"]),
        storage_spec=study.spec if study else None,
        study_name=study.name if study else None,
        warm=warm,
    ), None
