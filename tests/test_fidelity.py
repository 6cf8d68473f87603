"""Optuna learns from the right fidelity, its study persists, and the confirmation stage retrains the best configs.

One small real sweep (BaseNet on digits, ASHA, 6 trials of up to 3 epochs, then the best 2
configs retrained twice each) serves all three: the Optuna study is read back from the searcher
state Tune saved in `<experiment>/search`, and from `<experiment>/optuna.journal` by a real
optuna-dashboard server, and checked against the result tables.
"""

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from tuning.optuna_search import FidelityOptunaSearch

PROJECT = Path(__file__).resolve().parents[1]
MAX_EPOCHS = 3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    out = subprocess.run(
        [
            sys.executable,
            "run_search.py",
            "--space",
            "basenet",
            "--dataset",
            "digits",
            "--num-samples",
            "6",
            "--max-epochs",
            str(MAX_EPOCHS),
            "--scheduler",
            "asha",
            "--grace-period",
            "1",
            "--max-concurrent",
            "2",
            "--seed",
            "0",
            "--confirm-top",
            "2",
            "--repeats",
            "2",
            "--storage-path",
            str(root),
            "--name",
            "f",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=1200,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = root / "f"
    trials = pd.read_parquet(exp / "tables" / "trials.parquet")
    epochs = pd.read_parquet(exp / "tables" / "epochs.parquet")
    return exp, trials, epochs, out.stdout


def test_optuna_study_has_early_stopped_trials_pruned_and_full_budget_ones_complete(experiment):
    exp, trials, epochs, _ = experiment
    searcher = FidelityOptunaSearch()
    searcher.restore_from_dir(str(exp / "search"))  # the searcher-state-*.pkl Tune saved
    by_number = {t.number: t for t in searcher.study.get_trials()}
    search = trials[trials["phase"] == "search"].set_index("trial_id")
    assert len(by_number) == len(search) == 6
    # The sweep is only a test when ASHA stopped some trials and let others finish.
    assert search["stopped_early"].any() and (~search["stopped_early"]).any(), search["epochs_completed"]

    for trial_id, ot_trial in searcher._ot_trials.items():  # Tune trial id -> Optuna trial
        frozen, row = by_number[ot_trial.number], search.loc[trial_id]
        curve = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        # One number per trial: the best validation accuracy so far (the running maximum), as ASHA's
        # stop_on 'best' and the report's best_val_accuracy.
        expected = dict(zip(curve["epoch"].astype(int), curve["val_accuracy"].cummax(), strict=True))
        # Every epoch reached Optuna at step = epoch, exactly once.
        assert frozen.intermediate_values.keys() == expected.keys()
        for step, value in expected.items():
            assert math.isclose(frozen.intermediate_values[step], value)
        assert math.isclose(frozen.value, row["best_val_accuracy"])
        if row["stopped_early"]:
            assert frozen.state == TrialState.PRUNED, (trial_id, row["epochs_completed"])
            assert frozen.last_step == row["epochs_completed"] < MAX_EPOCHS
            assert math.isclose(frozen.value, expected[frozen.last_step])
        else:
            assert row["status"] == "completed"
            assert frozen.state == TrialState.COMPLETE and frozen.last_step == MAX_EPOCHS


def test_confirmation_retrains_the_best_two_configs_twice_with_new_seeds(experiment):
    _, trials, _, stdout = experiment
    search, confirm = trials[trials["phase"] == "search"], trials[trials["phase"] == "confirm"]
    assert len(confirm) == 4
    assert (confirm["status"] == "completed").all(), confirm[["status", "error"]]
    assert confirm["test_accuracy"].notna().all()
    assert (confirm["epochs_completed"] == MAX_EPOCHS).all() and (confirm["patience"] == 0).all()
    assert set(confirm["seed"]) == {1, 2} and not set(confirm["seed"]) & set(search["seed"])

    knobs = ["model", "optimizer", "learning_rate", "batch_size"]
    # The best two: the largest budget first (ASHA may let only one trial reach it), then accuracy.
    ranked = search.sort_values(["epochs_completed", "best_val_accuracy"], ascending=False)
    best2 = ranked.drop_duplicates(knobs).head(2)
    expected = sorted(tuple(r) for r in best2[knobs].itertuples(index=False))
    counts = confirm.groupby(knobs).size()
    assert sorted(counts.index) == expected and (counts == 2).all()
    # Each config ran once per seed.
    assert (confirm.groupby(knobs)["seed"].nunique() == 2).all()
    assert "confirmed (test accuracy over seeds)" in stdout


# trials.parquet's status -> the state Optuna must hold (a full-budget trial is COMPLETE; one ASHA
# stopped is PRUNED; an error is FAIL).
STATES = {"completed": "Complete", "stopped": "Pruned", "error": "Fail"}


@contextlib.contextmanager
def dashboard(journal: Path):
    """`optuna-dashboard JOURNAL` (the README's command) on a free loopback port; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen(
        [str(exe), str(journal), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/meta", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"no dashboard: {proc.stdout.read().decode()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def served_trials(url: str, study_name: str) -> list[dict]:
    """The study's trials as the dashboard's JSON API serves them to its web page."""
    with urllib.request.urlopen(f"{url}/api/studies", timeout=30) as r:
        studies = json.load(r)["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == study_name]
    with urllib.request.urlopen(f"{url}/api/studies/{study['study_id']}", timeout=30) as r:
        return json.load(r)["trials"]


def by_trial_id(served: list[dict]) -> dict[str, str]:
    ids = [next(a["value"] for a in t["user_attrs"] if a["key"] == "trial_id") for t in served]
    assert len(ids) == len(set(ids)), ids  # one Optuna trial per Tune trial: no duplicates
    return dict(zip(ids, (t["state"] for t in served), strict=True))


def test_optuna_dashboard_serves_the_study_as_the_tables_record_it_also_after_a_resume(experiment, tmp_path):
    exp, trials, _, _ = experiment
    search = trials[trials["phase"] == "search"]
    expected = {r.trial_id: STATES[r.status] for r in search.itertuples()}
    assert set(expected.values()) >= {"Complete", "Pruned"}
    with dashboard(exp / "optuna.journal") as url:
        assert by_trial_id(served_trials(url, "f")) == expected

    # --resume of the experiment moved elsewhere: its searcher re-attaches to the journal beside it.
    moved = tmp_path / "moved"
    shutil.copytree(exp, moved / "f")
    before = (exp / "optuna.journal").read_bytes()
    out = subprocess.run(
        [sys.executable, "run_search.py", "--resume", "--name", "f", "--storage-path", str(moved)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"optuna-dashboard {moved / 'f' / 'optuna.journal'}" in out.stdout
    resumed = pd.read_parquet(moved / "f" / "tables" / "trials.parquet")
    assert sorted(resumed["trial_id"]) == sorted(trials["trial_id"])
    with dashboard(moved / "f" / "optuna.journal") as url:
        assert by_trial_id(served_trials(url, "f")) == expected
    assert (exp / "optuna.journal").read_bytes() == before
