"""TPE with a bounded cost per ask (tuning.tpe): Optuna's TPE exactly up to its bound; above it, TPE's best
trials ("below") exactly and a seeded sample of the others."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import TrialState

from tuning.tpe import BEST, FINISHED, BoundedTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    return -((x - 1) ** 2) + {"a": 0.0, "b": 0.5, "c": 1.0}[kind]


def asked(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


def test_up_to_its_bound_it_asks_what_optunas_tpe_asks():
    assert asked(BoundedTPESampler(seed=3), 40) == asked(optuna.samplers.TPESampler(seed=3), 40)


def test_above_its_bound_tpe_sees_the_bound_with_the_best_trials_and_asks_the_same_again():
    first = asked(BoundedTPESampler(seed=3, history=30), 70)
    assert first == asked(BoundedTPESampler(seed=3, history=30), 70)  # seeded
    assert first[:31] == asked(optuna.samplers.TPESampler(seed=3), 31)  # Optuna's TPE up to the bound

    sampler = BoundedTPESampler(seed=3, history=30)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=70)
    trials = study.get_trials(deepcopy=False)
    seen = sampler.history_of(study, trials, number=70)
    assert len(seen) == 30 and len({t.number for t in seen}) == 30
    full_below, _ = _split_trials(study, trials, BEST)
    seen_below, _ = _split_trials(study, seen, BEST)
    assert [t.number for t in seen_below] == [t.number for t in full_below]  # TPE's "below", exactly
    assert sampler.history_of(study, trials, number=71) != seen  # a sample per ask


def test_with_few_completed_trials_pruned_ones_fill_below_as_in_optunas_split():
    sampler = BoundedTPESampler(seed=0, history=30)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(60):
        trial = study.ask()
        x = trial.suggest_float("x", -5, 5)
        for step in range(1 + i % 3):
            trial.report(-abs(x) + step, step)
        if i % 10 == 0:
            study.tell(trial, -abs(x) + 3)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False)
    seen = sampler.history_of(study, trials, number=60)
    full_below, _ = _split_trials(study, trials, BEST)
    seen_below, _ = _split_trials(study, seen, BEST)
    assert len(seen) == 30 and [t.number for t in seen_below] == [t.number for t in full_below]


def test_several_objectives_and_a_small_bound_are_left_to_optuna():
    sampler = BoundedTPESampler(seed=0, history=30)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=40)
    trials = study.get_trials(deepcopy=False)
    assert sampler.history_of(study, trials, number=40) == [t for t in trials if t.state in FINISHED]
    with pytest.raises(ValueError):
        BoundedTPESampler(history=BEST)


def test_the_history_kept_up_to_date_across_asks_is_the_one_read_afresh():
    """Trials finish out of order, as PRUNED, COMPLETE or FAIL, while others run: the sampler that kept its
    history from ask to ask models what a new sampler reading the study afresh models, TPE's best exactly
    and every running trial."""
    rng, history = random.Random(0), 40
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    kept, running, states = BoundedTPESampler(seed=1, history=history), [], FINISHED + (TrialState.RUNNING,)
    for number in range(150):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        running.append(trial)
        if len(running) > 6:
            done = running.pop(rng.randrange(len(running)))
            state = rng.choice([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
            study.tell(done, rng.random() if state == TrialState.COMPLETE else None, state=state)
        trials = study.get_trials(deepcopy=False)
        seen = [t.number for t in kept.history_of(study, trials, number, states)]
        assert seen == [
            t.number for t in BoundedTPESampler(seed=1, history=history).history_of(study, trials, number, states)
        ]
        finished = [t for t in trials if t.state in FINISHED]
        best = sorted((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:BEST]
        assert {t.number for t in trials if t.state == TrialState.RUNNING} <= set(seen)
        assert {t.number for t in best} <= set(seen) and seen == sorted(set(seen))
        assert set(seen) <= {t.number for t in trials if t.state in states}
        assert len(seen) == min(history, len(finished)) + len(running)
    assert len(finished) > history  # the bound was reached
