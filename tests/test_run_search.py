"""The command line end to end: exit codes, messages, and the tables of a real search."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.tables import EPOCHS_SCHEMA, TRIALS_SCHEMA

DESIGN_TRIAL_COLUMNS = [
    "experiment", "space", "phase", "trial_id", "status", "dataset", "seed", "model", "bn_position",
    "optimizer", "learning_rate", "batch_size", "augmentation", "transfer_mode", "depth",
    "epochs_completed", "stopped_early", "best_val_accuracy", "val_accuracy", "val_loss", "test_accuracy",
    "train_time_s", "node", "gpus", "started_at", "ended_at", "error", "git_sha",
    "tensorflow_version", "keras_version", "ray_version", "optuna_version",
]
DESIGN_EPOCH_COLUMNS = ["trial_id", "epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                        "learning_rate", "epoch_time_s"]


def test_unknown_space_exits_2_listing_the_known_ones(search, tmp_path):
    out = search("--space", "nope", "--storage-path", str(tmp_path))
    assert out.returncode == 2
    assert "'nope' is unknown" in out.stderr and "batchnorm" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert list(tmp_path.iterdir()) == []


def test_unavailable_dataset_exits_2_naming_the_fix(search, tmp_path):
    out = search("--space", "batchnorm", "--dataset", "cifar100_25", "--data-dir", str(tmp_path / "none"),
                 "--storage-path", str(tmp_path / "res"))
    assert out.returncode == 2
    assert "--data-dir" in out.stderr and "--dataset digits" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_batchnorm_search_on_digits_writes_the_design_tables(search, tmp_path):
    out = search("--space", "batchnorm", "--dataset", "digits", "--num-samples", "6", "--max-epochs", "3",
                 "--storage-path", str(tmp_path), "--name", "x")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = tmp_path / "x" / "tables"
    trials = pd.read_parquet(tables / "trials.parquet")
    epochs = pd.read_parquet(tables / "epochs.parquet")

    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(DESIGN_TRIAL_COLUMNS) <= set(trials.columns)
    assert list(epochs.columns) == DESIGN_EPOCH_COLUMNS
    assert pq.read_schema(tables / "trials.parquet").equals(TRIALS_SCHEMA, check_metadata=False)
    assert pq.read_schema(tables / "epochs.parquet").equals(EPOCHS_SCHEMA, check_metadata=False)
    assert pq.read_schema(tables / "trials.parquet").metadata[b"schema_version"] == b"1"

    # Exactly one row per reported epoch, numbered 1..epochs_completed without gaps.
    assert len(epochs) == trials["epochs_completed"].sum()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, n in zip(trials["trial_id"], trials["epochs_completed"], strict=True):
        assert sorted(epochs.loc[epochs["trial_id"] == trial_id, "epoch"]) == list(range(1, n + 1))

    assert (trials[["experiment", "space", "phase", "dataset"]].iloc[0].tolist()
            == ["x", "batchnorm", "search", "digits"])
    assert (trials["seed"] == 0).all() and set(trials["model"]) <= {"basenet", "convnet"}
    assert set(trials["bn_position"]) <= {"none", "before_relu", "after_relu"}
    stopped = trials[trials["stopped_early"]]
    full = trials[trials["epochs_completed"] == 3]
    assert (stopped["epochs_completed"] < 3).all() and stopped["test_accuracy"].isna().all()
    assert (stopped["status"] == "stopped").all()
    assert full["test_accuracy"].between(0, 1).all() and (full["status"] == "completed").all()
    assert len(stopped) + len(full) == 6
    assert trials["error"].isna().all() and trials["node"].notna().all()
    assert (trials["tensorflow_version"].str.len() > 0).all()
    assert "best trial" in out.stdout and str(tables) in out.stdout
