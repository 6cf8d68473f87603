"""notebooks/explore_results.ipynb runs clean (nbclient, a real kernel) on an experiment folder."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from analysis import report
from tests.analysis.notebook_runner import NOTEBOOK, run_notebook


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def write_study(experiment: Path) -> None:
    """The Optuna study the driver keeps beside the tables, one trial per search trial (real Optuna, journal
    file), states as the searcher tells them: full budget COMPLETE, stopped PRUNED."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    trials = pd.read_parquet(experiment / "tables" / "trials.parquet")
    storage = JournalStorage(JournalFileBackend(str(experiment / "optuna.journal")))
    study = optuna.create_study(study_name=experiment.name, storage=storage, direction="maximize")
    for row in trials[trials["phase"] == "search"].itertuples():
        done = row.status == "completed"
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE if done else TrialState.PRUNED,
                value=row.val_accuracy if done else None,
                params={"learning_rate": row.learning_rate},
                distributions={"learning_rate": FloatDistribution(1e-5, 1.0, log=True)},
                user_attrs={"trial_id": row.trial_id},
            )
        )


def test_notebook_runs_clean_on_a_results_folder(bn_experiment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert report.main([str(bn_experiment)]) == 0
    write_study(bn_experiment)
    nb = run_notebook(bn_experiment, monkeypatch)
    text = outputs_text(nb)
    assert str(bn_experiment) in text
    assert "mean_test_accuracy" in text  # the DuckDB query ran
    assert "after_relu beats before_relu" in text  # the BN comparison read the report's verdicts
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the learning curve, the BN comparison, accuracy against cost
    assert "cheapest within 1 point of the best" in text and "23,520 parameters" in text  # the cost columns
    assert "Optuna study 'bn': 12 trials, 8 PRUNED, 4 COMPLETE" in text  # optuna.load_study on the journal


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert os.fspath(NOTEBOOK).endswith(".ipynb")
