"""The driver's searchers, driven through the Searcher API exactly as Tune calls it (no Ray runtime needed)."""

import json
import pickle

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import SPACES
from trainables.config import TrialConfig
from tuning.optuna_search import (
    FidelityOptunaSearch,
    build_optuna_search,
    fixed_configs_search,
    full_configs,
    grid_configs,
)

FIXED = {"dataset": "digits", "seed": 0, "max_epochs": 3}


def searcher(seed=0):
    return build_optuna_search(
        SPACES["batchnorm"], FIXED, metric="val_accuracy", mode="max", seed=seed, random=False, max_epochs=3
    )


def run_epochs(s, trial_id, accuracies, **end):
    """As Tune calls it: a result the scheduler answers STOP (the last one) goes to on_trial_complete only."""
    for epoch, acc in enumerate(accuracies[:-1], start=1):
        s.on_trial_result(trial_id, {"epoch": epoch, "val_accuracy": acc, "training_iteration": epoch})
    last = {"epoch": len(accuracies), "val_accuracy": accuracies[-1]} if accuracies else None
    s.on_trial_complete(trial_id, result=end.pop("result", last), **end)


def test_suggested_configs_are_trial_configs_with_the_fixed_knobs():
    s = searcher()
    config = s.suggest("a")
    assert {k: config[k] for k in FIXED} == FIXED
    TrialConfig.from_params(config)


def test_early_stopped_trials_are_pruned_at_their_epoch_and_full_budget_trials_complete():
    s = searcher()
    for tid in "abcde":
        s.suggest(tid)
    run_epochs(s, "a", [0.2, 0.5, 0.7])  # full budget
    run_epochs(s, "b", [0.1])  # stopped by ASHA at the first rung
    run_epochs(s, "c", [0.3, 0.4])  # stopped by patience
    run_epochs(s, "d", [0.3], error=True)  # crashed
    run_epochs(s, "e", [0.3, float("nan")])  # diverged: NaN is not a score
    trials = s.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.FAIL,
    ]
    a, b, c = trials[:3]
    assert a.value == 0.7 and a.intermediate_values == {1: 0.2, 2: 0.5, 3: 0.7}
    # Optuna's value of a pruned trial is its last intermediate value, at its own step.
    assert b.value == 0.1 and b.intermediate_values == {1: 0.1} and b.last_step == 1
    assert c.value == 0.4 and c.last_step == 2


def test_a_replayed_epoch_after_a_restore_is_reported_once():
    s = searcher()
    s.suggest("a")
    for epoch, acc in [(1, 0.2), (2, 0.4), (2, 0.41), (3, 0.6)]:  # epoch 2 replayed from its checkpoint
        s.on_trial_result("a", {"epoch": epoch, "val_accuracy": acc})
    s.on_trial_complete("a", result={"epoch": 3, "val_accuracy": 0.6})
    (trial,) = s.study.get_trials()
    assert trial.intermediate_values == {1: 0.2, 2: 0.4, 3: 0.6}
    assert trial.state == TrialState.COMPLETE


def test_searcher_state_round_trips_through_tunes_save_and_restore(tmp_path):
    s = searcher(seed=7)
    s.suggest("a")
    run_epochs(s, "a", [0.3])
    s.suggest("b")
    s.save_to_dir(str(tmp_path), session_str="x")
    restored = FidelityOptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    assert [t.state for t in restored.study.get_trials()] == [TrialState.PRUNED, TrialState.RUNNING]
    # The restored searcher carries on: the running trial finishes, new ones are sampled.
    run_epochs(restored, "b", [0.1, 0.2, 0.9])
    assert restored.study.get_trials()[1].state == TrialState.COMPLETE
    TrialConfig.from_params(restored.suggest("c"))
    pickle.dumps(restored)


def test_same_seed_same_suggestions():
    s1, s2 = searcher(seed=5), searcher(seed=5)
    first = [s1.suggest(str(i)) for i in range(3)]
    again = [s2.suggest(str(i)) for i in range(3)]
    assert first == again


def test_grid_configs_repeat_every_cell_with_consecutive_seeds():
    space = SPACES["reference"]
    configs = grid_configs(space, {"dataset": "digits", "max_epochs": 2}, seed=10, repeats=2)
    assert len(configs) == 2 * len(space.cells())
    assert [c["seed"] for c in configs] == [10] * 6 + [11] * 6
    assert configs[:6] == [{**cell, "dataset": "digits", "max_epochs": 2, "seed": 10} for cell in space.cells()]


def test_fixed_configs_search_declares_every_knob_of_its_points():
    configs = [{"model": "basenet", "seed": 1}, {"model": "convnet", "bn_position": "after_relu", "seed": 2}]
    search, param_space = fixed_configs_search(configs)
    assert set(param_space) == set(TrialConfig().to_dict())
    assert search._points_to_evaluate == full_configs(configs)
    with pytest.raises(ValueError, match="unknown config keys"):
        full_configs([{"modle": "basenet"}])


optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- the persistent study ---------------------------------------------------------------------------


def persistent(path, metric="val_accuracy", mode="max"):
    return build_optuna_search(
        SPACES["batchnorm"],
        FIXED,
        metric=metric,
        mode=mode,
        seed=3,
        random=False,
        max_epochs=3,
        storage_spec=str(path),
        study_name="exp",
    )


def states_on_disk(path):
    """The study as another process (optuna-dashboard, a notebook) reads it from the journal file."""
    study = optuna.load_study(study_name="exp", storage=str(path)) if "://" in str(path) else None
    if study is None:
        from optuna.storages.journal import JournalFileBackend

        study = optuna.load_study(
            study_name="exp", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        )
    return [t.state for t in study.get_trials()]


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_the_study_is_on_disk_as_trials_are_asked_report_and_end(tmp_path, kind):
    path = tmp_path / "optuna.journal" if kind == "journal" else f"sqlite:///{tmp_path / 'o.db'}"
    s = persistent(path)
    s.suggest("a")
    s.suggest("b")
    assert states_on_disk(path) == [TrialState.RUNNING, TrialState.RUNNING]
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.4})
    run_epochs(s, "a", [0.4, 0.5, 0.6])
    run_epochs(s, "b", [0.1])
    s.suggest("c")
    run_epochs(s, "c", [0.2], error=True)
    assert states_on_disk(path) == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert [t.user_attrs["trial_id"] for t in s.study.get_trials()] == ["a", "b", "c"]  # Tune's trial ids


def test_a_restored_searcher_reattaches_to_the_storage_without_duplicates(tmp_path, monkeypatch):
    import shutil

    journal = tmp_path / "old" / "optuna.journal"
    journal.parent.mkdir()
    s = persistent(journal)
    s.suggest("a")
    run_epochs(s, "a", [0.3])  # PRUNED
    s.suggest("b")
    s.on_trial_result("b", {"epoch": 1, "val_accuracy": 0.5})
    s.save_to_dir(str(tmp_path), session_str="x")  # Tune's snapshot
    # After the snapshot, before the crash: b reports epoch 2 and ends, a new trial is asked.
    s.on_trial_result("b", {"epoch": 2, "val_accuracy": 0.6})
    s.on_trial_complete("b", result={"epoch": 3, "val_accuracy": 0.7})
    s.suggest("lost")
    # The experiment folder moved; the driver names the journal's new place.
    moved = tmp_path / "new" / "optuna.journal"
    moved.parent.mkdir()
    shutil.copy(journal, moved)
    monkeypatch.setenv("HPO_OPTUNA_STORAGE", str(moved))
    restored = FidelityOptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    # Tune replays b from its checkpoint: its epochs and its end are not told twice.
    restored.on_trial_result("b", {"epoch": 2, "val_accuracy": 0.61})
    restored.on_trial_complete("b", result={"epoch": 3, "val_accuracy": 0.71})
    restored.suggest("c")
    run_epochs(restored, "c", [0.1, 0.2, 0.3])
    trials = restored.study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7} and trials[1].value == 0.7
    assert trials[2].user_attrs["error"].startswith("asked before the driver stopped")
    assert states_on_disk(moved) == [t.state for t in trials]
    assert len(states_on_disk(journal)) == 3  # the old copy was left alone
    assert b"_ot_study" not in pickle.dumps(restored.__getstate__())


def test_a_searcher_state_cut_short_is_rebuilt_from_the_study(tmp_path, caplog):
    # Before tuning.atomic_storage, a driver killed mid-copy of Tune's snapshot left the searcher's pickle
    # empty. --resume restores into the searcher as the run was built (tuner.pkl).
    journal = tmp_path / "optuna.journal"
    s = persistent(journal)
    as_built = pickle.dumps(s)
    s.suggest("a")
    run_epochs(s, "a", [0.3])  # PRUNED
    s.suggest("b")
    s.on_trial_result("b", {"epoch": 1, "val_accuracy": 0.5})
    s.save_to_dir(str(tmp_path), session_str="x")
    # Tune's snapshot beside it names the trials it knows (Ray 2.60's experiment_state-*.json).
    trial_data = [[json.dumps({"trial_id": t, "status": "RUNNING"}), "{}"] for t in ("a", "b")]
    (tmp_path / "experiment_state-x.json").write_text(json.dumps({"trial_data": trial_data}))
    s.suggest("lost")  # asked after the snapshot, before the crash: Tune will never run it
    (state,) = tmp_path.glob("searcher-state-*.pkl")
    state.write_bytes(b"")
    restored = pickle.loads(as_built)
    restored.restore_from_dir(str(tmp_path))
    assert "rebuilt from the Optuna study" in caplog.text
    # Tune replays b from its checkpoint: epoch 1 is not told twice, a's end is not told again.
    restored.on_trial_result("b", {"epoch": 1, "val_accuracy": 0.55})
    restored.on_trial_result("b", {"epoch": 2, "val_accuracy": 0.6})
    restored.on_trial_complete("b", result={"epoch": 3, "val_accuracy": 0.7})
    run_epochs(restored, "a", [0.9, 0.9, 0.9])
    TrialConfig.from_params(restored.suggest("c"))
    trials = restored.study.get_trials()
    assert [t.user_attrs["trial_id"] for t in trials] == ["a", "b", "lost", "c"]
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING]
    assert trials[1].intermediate_values == {1: 0.5, 2: 0.6, 3: 0.7}
    assert trials[2].user_attrs["error"].startswith("asked before the driver stopped")
    # Without a storage to rebuild from, the error stays Tune's to handle.
    bare = FidelityOptunaSearch()
    with pytest.raises(EOFError):
        bare.restore_from_dir(str(tmp_path))


def test_several_objectives_make_a_multi_objective_study(tmp_path):
    s = persistent(tmp_path / "optuna.journal", metric=["val_accuracy", "param_count"], mode=["max", "min"])
    for tid in "abcd":
        s.suggest(tid)
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5, "param_count": 100})  # not an intermediate value
    s.on_trial_complete("a", result={"epoch": 3, "val_accuracy": 0.7, "param_count": 100})
    run_epochs(s, "b", [0.2])  # stopped by ASHA
    s.on_trial_complete("c", result={"epoch": 3, "val_accuracy": 0.9, "param_count": None})
    s.on_trial_complete("d", result={"epoch": 3, "val_accuracy": 0.8, "param_count": 50})
    study = s.study
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    a, b, c, d = study.get_trials()
    assert a.state == TrialState.COMPLETE and a.values == [0.7, 100] and a.intermediate_values == {}
    assert b.state == TrialState.PRUNED and b.values is None
    assert c.state == TrialState.FAIL and "param_count" in c.user_attrs["error"]
    assert d.values == [0.8, 50]
    TrialConfig.from_params(s.suggest("e"))  # TPE samples from a multi-objective history


def test_a_restored_searcher_whose_storage_lost_the_study_starts_it_afresh(tmp_path, monkeypatch):
    s = persistent(tmp_path / "optuna.journal")
    s.suggest("a")
    s.save_to_dir(str(tmp_path), session_str="x")
    monkeypatch.setenv("HPO_OPTUNA_STORAGE", str(tmp_path / "empty.journal"))  # e.g. never uploaded
    restored = FidelityOptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    run_epochs(restored, "a", [0.1, 0.2, 0.3])  # Optuna no longer knows a: ignored, not a crash
    TrialConfig.from_params(restored.suggest("b"))
    assert [t.user_attrs["trial_id"] for t in restored.study.get_trials()] == ["b"]


# ---- one number per trial: the best epoch, as ASHA (stop_on best) and the report score it ---------


def test_optuna_scores_a_trial_by_its_best_epoch_as_asha_and_the_report_do(tmp_path):
    """A curve that peaks and falls (0.27 at epoch 1, 0.125 at the end: the dashboard showed 0.125 where the
    report ranked by 0.271): Optuna's value is the best epoch, each intermediate value the best so far, a
    PRUNED trial's value its best before it stopped; the study's user attrs say which number it is."""
    journal = tmp_path / "optuna.journal"
    s = persistent(journal)
    s.suggest("a")
    s.suggest("b")
    run_epochs(s, "a", [0.271, 0.2, 0.125])
    run_epochs(s, "b", [0.3, 0.1])  # stopped by ASHA after 2 epochs
    a, b = s.study.get_trials()
    assert a.state == TrialState.COMPLETE and a.value == 0.271
    assert a.intermediate_values == {1: 0.271, 2: 0.271, 3: 0.271}
    assert b.state == TrialState.PRUNED and b.value == 0.3 and b.intermediate_values == {1: 0.3, 2: 0.3}
    from tuning.optuna_search import VALUE_ATTRS

    on_disk = optuna.load_study(
        study_name="exp",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    )
    assert on_disk.user_attrs == VALUE_ATTRS and "best validation accuracy" in on_disk.user_attrs["value"]
    # An in-memory study (no storage) says it too.
    mem = searcher()
    mem.suggest("x")
    assert mem.study.user_attrs == VALUE_ATTRS


def test_a_restored_searcher_keeps_the_running_best_from_the_storage(tmp_path):
    s = persistent(tmp_path / "optuna.journal")
    s.suggest("a")
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.6})
    s.save_to_dir(str(tmp_path), session_str="x")
    s.on_trial_result("a", {"epoch": 2, "val_accuracy": 0.8})  # after the snapshot: in the storage only
    restored = FidelityOptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    restored.on_trial_complete("a", result={"epoch": 3, "val_accuracy": 0.5})
    (trial,) = restored.study.get_trials()
    assert trial.intermediate_values == {1: 0.6, 2: 0.8, 3: 0.8} and trial.value == 0.8


def test_several_objectives_take_the_best_epoch_for_validation_accuracy(tmp_path):
    s = persistent(tmp_path / "optuna.journal", metric=["val_accuracy", "param_count"], mode=["max", "min"])
    s.suggest("a")
    s.on_trial_result("a", {"epoch": 1, "val_accuracy": 0.5, "param_count": 100})
    s.on_trial_result("a", {"epoch": 2, "val_accuracy": 0.9, "param_count": 100})
    s.on_trial_complete("a", result={"epoch": 3, "val_accuracy": 0.7, "param_count": 100})
    (trial,) = s.study.get_trials()
    assert trial.values == [0.9, 100]
