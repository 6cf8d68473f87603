"""tuning.journal_storage: incremental reads that answer exactly what Optuna's own journal storage answers."""

import pickle
import random

import optuna
import pytest
from optuna.storages import JournalStorage as OptunaJournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tuning.journal_storage import JournalStorage, open_journal
from tuning.optuna_search import open_storage

S = TrialState
QUERIES = [None, (S.WAITING,), (S.RUNNING,), (S.RUNNING, S.WAITING), (S.COMPLETE,), (S.COMPLETE, S.PRUNED)]
QUERIES += [(S.COMPLETE, S.PRUNED, S.RUNNING), (S.FAIL,), tuple(S)]


def seen(trials: list) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs) for t in trials]


def assert_reads_match(ours: JournalStorage, path, study_id: int) -> set[TrialState]:
    """Every query of QUERIES, shallow and deep, as Optuna's storage reads it; the states read."""
    fresh = OptunaJournalStorage(JournalFileBackend(str(path)))  # Optuna's, replaying the whole file
    for states in QUERIES:
        expected = seen(fresh.get_all_trials(study_id, deepcopy=False, states=states))
        assert seen(ours.get_all_trials(study_id, deepcopy=False, states=states)) == expected, states
        assert seen(ours.get_all_trials(study_id, deepcopy=True, states=states)) == expected, states
    return {t.state for t in ours.get_all_trials(study_id, deepcopy=False)}


def test_reads_match_optunas_as_trials_are_added_and_finish_here_and_in_another_writer(tmp_path):
    # Our storage reads after every step of a random mix of asks, enqueues, reports and ends, some written
    # through it and some through a second writer of the same file (another process's storage).
    path = tmp_path / "optuna.journal"
    ours = open_journal(str(path))
    other = OptunaJournalStorage(JournalFileBackend(str(path)))
    here = optuna.create_study(study_name="x", storage=ours, sampler=optuna.samplers.RandomSampler(seed=0))
    there = optuna.load_study(study_name="x", storage=other, sampler=optuna.samplers.RandomSampler(seed=1))
    rng = random.Random(0)
    running: list[tuple[optuna.Study, optuna.Trial]] = []
    kinds: set[TrialState] = set()
    for step in range(300):
        study = here if rng.random() < 0.5 else there
        move = rng.random()
        if move < 0.1:
            study.enqueue_trial({"x": rng.random()})  # WAITING until an ask pops it
        elif move < 0.45 or not running:
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            running.append((study, trial))
        elif move < 0.6:
            _, trial = rng.choice(running)
            trial.report(rng.random(), step)
            trial.set_user_attr("step", step)
        else:
            study, trial = running.pop(rng.randrange(len(running)))
            end = rng.choice([S.COMPLETE, S.PRUNED, S.FAIL])
            study.tell(trial, rng.random() if end == S.COMPLETE else None, state=end)
        if step % 3 == 0:
            kinds |= assert_reads_match(ours, path, here._study_id)
    kinds |= assert_reads_match(ours, path, here._study_id)
    assert kinds == set(S)  # every state was read back


def test_the_driver_opens_journals_through_it_and_a_pickled_copy_reads_the_file_again(tmp_path):
    path = tmp_path / "optuna.journal"
    storage = open_storage(str(path))
    assert isinstance(storage, JournalStorage)
    study = optuna.create_study(study_name="x", storage=storage)
    for i in range(5):
        study.tell(study.ask(), float(i))
    storage.get_all_trials(study._study_id, deepcopy=False)  # an index to leave behind
    copy = pickle.loads(pickle.dumps(storage))
    optuna.load_study(study_name="x", storage=storage).tell(study.ask(), 5.0)
    assert [t.value for t in copy.get_all_trials(study._study_id, deepcopy=False)] == [0.0, 1, 2, 3, 4, 5]
    with pytest.raises(KeyError):
        storage.get_all_trials(99, deepcopy=False)
