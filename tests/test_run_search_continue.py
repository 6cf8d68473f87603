"""Continuing from earlier work: a search extended with --resume --num-samples (the same Optuna study, a
confirmation afresh), and a new search warm-started from an earlier experiment's best configurations."""

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from tests.conftest import run_search
from trainables.config import knob_types

# BaseNet on the bundled digits, one epoch a trial, every trial to its budget: the cheapest real search.
DIGITS = ("--space", "basenet", "--dataset", "digits", "--max-epochs", "1", "--scheduler", "fifo")
RUN_KNOBS = {"dataset", "seed", "max_epochs", "patience", "weights", "input_size"}


def study_of(exp: Path) -> optuna.Study:
    return optuna.load_study(
        study_name=exp.name, storage=JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    )


def ok(out) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    """A finished digits search of 3 trials, its best confirmed once (experiment `first`)."""
    store = tmp_path_factory.mktemp("store")
    ok(
        run_search(
            *DIGITS,
            "--num-samples",
            "3",
            "--confirm-top",
            "1",
            "--repeats",
            "1",
            "--storage-path",
            str(store),
            "--name",
            "first",
        )
    )
    return store / "first"


@pytest.mark.slow
def test_resume_with_more_samples_extends_the_same_study_and_confirms_afresh(first: Path) -> None:
    before = pd.read_parquet(first / "tables" / "trials.parquet")
    out = run_search(
        "--resume", "--name", "first", "--storage-path", str(first.parent), "--num-samples", "6", "--confirm-top", "2"
    )
    ok(out)
    assert "extending the search by 3 trials to 6" in out.stdout
    trials = pd.read_parquet(first / "tables" / "trials.parquet")
    search = trials[trials["phase"] == "search"]
    assert len(search) == 6 and trials["trial_id"].is_unique
    assert set(before["trial_id"]) <= set(trials["trial_id"])  # the first three kept, not run again
    record = json.loads((first / "experiment.json").read_text())
    # Each Ray Tune run and its trial count, in the order they started (the confirmation afresh last).
    assert list(record["runs"]) == ["search", "confirm", "search-2", "confirm-2"] and record["num_samples"] == 6
    assert (record["runs"]["search"], record["runs"]["confirm"], record["runs"]["search-2"]) == (3, 1, 3)
    assert record["args"]["num_samples"] == 6 and record["args"]["confirm_top"] == 2

    # The study holds every trial once, and the last three were asked knowing the first three's results.
    study = study_of(first)
    told = [t.user_attrs["trial_id"] for t in study.trials]
    assert sorted(told) == sorted(search["trial_id"]) and len(set(told)) == 6
    by_number = sorted(study.trials, key=lambda t: t.number)
    assert {t.user_attrs["trial_id"] for t in by_number[:3]} == set(before.loc[before["phase"] == "search", "trial_id"])
    assert all(t.user_attrs["finished_before"] >= 3 for t in by_number[3:])
    assert all(t.state.name == "COMPLETE" for t in by_number)

    # Confirmed afresh with the 2 best of 6: no configuration and seed confirmed twice.
    confirm = trials[trials["phase"] == "confirm"]
    names = [k for k in knob_types() if k in confirm]
    assert 2 <= len(confirm) <= 3 and not confirm[names].astype(str).duplicated().any()
    assert (first / "confirm-2").is_dir() and record["runs"]["confirm-2"] == len(confirm) - 1


@pytest.mark.slow
def test_warm_start_runs_the_earlier_best_configuration_first(first: Path, tmp_path: Path) -> None:
    out = run_search(
        *DIGITS,
        "--num-samples",
        "2",
        "--warm-start",
        str(first),  # its folder; a bare name looks in --storage-path
        "--warm-start-top",
        "1",
        "--storage-path",
        str(tmp_path),
        "--name",
        "second",
    )
    ok(out)
    earlier = pd.read_parquet(first / "tables" / "trials.parquet")
    earlier = earlier[earlier["phase"] == "search"].sort_values(
        ["best_val_accuracy", "trial_id"], ascending=[False, True]
    )
    best = earlier.iloc[0]
    trials = pd.read_parquet(tmp_path / "second" / "tables" / "trials.parquet")
    warm = trials[trials["warm_start"].notna()]
    assert list(warm["warm_start"]) == [f"first/{best['trial_id']}"]
    knobs = [k for k in knob_types() if k in trials and k not in RUN_KNOBS]
    ran = warm[knobs].iloc[0]
    # Equal knob by knob (an integer column with nulls reads back as floats: 3 and 3.0 are one value).
    differ = {k: (ran[k], best[k]) for k in knobs if not (pd.isna(ran[k]) and pd.isna(best[k])) and ran[k] != best[k]}
    assert not differ, differ
    assert trials["warm_start"].isna().sum() == 1
    # Asked first, and in the study of the new experiment with its origin.
    study = study_of(tmp_path / "second")
    asked_first = min(study.trials, key=lambda t: t.number)
    assert asked_first.user_attrs["trial_id"] == warm["trial_id"].iloc[0]
    assert asked_first.user_attrs["warm_start"] == f"first/{best['trial_id']}"


# ---- usage: refused before anything is written ------------------------------------------------------


def test_resume_with_fewer_samples_than_asked_before_exits_2(search, tmp_path: Path) -> None:
    exp = tmp_path / "x"
    (exp / "search").mkdir(parents=True)
    (exp / "search" / "tuner.pkl").write_bytes(b"")
    args = {"space": "basenet", "dataset": "digits", "num_samples": 5, "max_epochs": 1}
    (exp / "experiment.json").write_text(json.dumps({"experiment": "x", "num_samples": 5, "args": args}))
    out = search("--resume", "--name", "x", "--storage-path", str(tmp_path), "--num-samples", "3", timeout=300)
    assert out.returncode == 2 and "--num-samples 3" in out.stderr and "never shrink it" in out.stderr
    assert "Traceback" not in out.stderr and sorted(p.name for p in exp.iterdir()) == ["experiment.json", "search"]


def test_resume_of_a_phase_whose_tune_state_is_cut_short_exits_2(search, tmp_path: Path) -> None:
    # What a driver killed mid-copy left before the storage was written atomically (tuning.atomic_storage):
    # Tune's resume would fail to read it and silently run the phase's trials again from scratch.
    exp = tmp_path / "x"
    (exp / "search").mkdir(parents=True)
    (exp / "search" / "tuner.pkl").write_bytes(b"")
    (exp / "search" / "experiment_state-2026-12-04_10-00-00.json").write_text('{"trial_data": []')
    args = {"space": "basenet", "dataset": "digits", "num_samples": 5, "max_epochs": 1}
    (exp / "experiment.json").write_text(json.dumps({"experiment": "x", "num_samples": 5, "args": args}))
    before = sorted(p.relative_to(exp) for p in exp.rglob("*"))
    out = search("--resume", "--name", "x", "--storage-path", str(tmp_path), timeout=300)
    assert out.returncode == 2 and "experiment_state-2026-12-04_10-00-00.json is cut short" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert sorted(p.relative_to(exp) for p in exp.rglob("*")) == before


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--warm-start", "nowhere"), "--warm-start nowhere: no experiment"),
        (("--warm-start", "nowhere", "--space", "batchnorm", "--search", "grid"), "--search grid asks it nothing"),
        (("--warm-start", "nowhere", "--warm-start-top", "0"), "--warm-start-top must be >= 1"),
    ],
)
def test_bad_warm_starts_exit_2(search, tmp_path: Path, flags, words) -> None:
    out = search(*DIGITS, *flags, "--storage-path", str(tmp_path / "res"), "--name", "x", timeout=300)
    assert out.returncode == 2 and words in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "res").exists()


def test_an_extension_interrupted_before_its_confirmation_confirms_afresh_on_resume() -> None:
    """experiment.json `runs` keeps the runs in the order they started: a search run after the newest
    confirmation run means that confirmation is of a smaller search."""
    from driver.phases import search_ran_after_confirm

    assert search_ran_after_confirm({"search": 3, "confirm": 1, "search-2": 3})
    assert not search_ran_after_confirm({"search": 3, "confirm": 1, "search-2": 3, "confirm-2": 2})
    assert not search_ran_after_confirm({"search": 3, "search-2": 3})
