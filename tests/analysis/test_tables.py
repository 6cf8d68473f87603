"""analysis.tables: rows in Ray Tune's trial-folder format -> trials.parquet, with nulls for knobs a
trial did not read, and experiments written before schema version 2 rebuilt the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from analysis import report, tables
from experiment import storage

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy_v1"  # written by the code before v2


def write_trial(root: Path, trial_id: str, params: dict, epochs: int = 2) -> None:
    """A trial folder as Ray Tune writes it: params.json and one result.json line per report."""
    folder = root / "search" / trial_id
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    lines = [
        {
            "trial_id": trial_id,
            "epoch": e,
            "loss": 1.0 / e,
            "accuracy": 0.5,
            "val_loss": 1.0 / e,
            "val_accuracy": 0.4 + 0.1 * e,
            "learning_rate": 0.01,
            "epoch_time_s": 1.0,
            "timestamp": 1_800_000_000 + e,
            "time_total_s": float(e),
            "node": "host:1",
            **({"test_accuracy": 0.55} if e == epochs else {}),
        }
        for e in range(1, epochs + 1)
    ]
    (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_written_table_has_nulls_where_a_trial_read_no_knob(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    root.mkdir()
    (root / storage.EXPERIMENT_FILE).write_text(
        json.dumps(
            {"experiment": "exp", "space": "reference", "max_epochs": 2, "config_version": tables.CONFIG_VERSION}
        )
    )
    base = {"dataset": "digits", "max_epochs": 2, "seed": 0}
    write_trial(root, "basenet_adam", {**base, "model": "basenet", "optimizer": "adam"})
    write_trial(root, "convnet_sgd_simple", {**base, "model": "convnet", "optimizer": "sgd"})
    write_trial(root, "convnet_complex", {**base, "model": "convnet", "augmentation": "complex"})
    write_trial(root, "convnet_whitening", {**base, "model": "convnet", "augmentation": "whitening"})
    tables.export_tables(root)
    trials = pd.read_parquet(root / "tables" / "trials.parquet").set_index("trial_id")
    assert pq.read_schema(root / "tables" / "trials.parquet").metadata[b"schema_version"] == b"3"

    basenet = trials.loc["basenet_adam"]
    for knob in (
        "depth",
        "base_width",
        "kernel_size",
        "pool_after",
        "dense_units",
        "momentum",
        "nesterov",
        "flip",
        "zoom_range",
        "zca_epsilon",
        "transfer_mode",
        "head_units",
        "input_size",
        "weights",
    ):
        assert pd.isna(basenet[knob]), knob
    assert basenet["bn_position"] == "none" and basenet["learning_rate"] == 0.01

    simple = trials.loc["convnet_sgd_simple"]
    assert simple["depth"] == 5 and simple["bn_position"] == "after_relu" and simple["momentum"] == 0.0
    assert simple[["flip", "zoom_range", "zca_epsilon"]].isna().all()
    assert trials.loc["convnet_complex", "flip"] == "horizontal_and_vertical"
    assert trials.loc["convnet_complex", "zoom_range"] == 0.2 and pd.isna(trials.loc["convnet_complex", "zca_epsilon"])
    assert trials.loc["convnet_whitening", "zca_epsilon"] == 0.1
    assert trials.loc["convnet_whitening", ["flip", "zoom_range"]].isna().all()


def test_an_experiment_written_before_schema_2_rebuilds_with_its_own_defaults(tmp_path: Path) -> None:
    exp = tmp_path / "legacy"
    shutil.copytree(LEGACY, exp)  # real trial folders of an `augmentation` search run by the v1 code
    assert "config_version" not in json.loads((exp / storage.EXPERIMENT_FILE).read_text())
    result = report.build_report(str(exp), rebuild_tables=True)
    trials = pd.read_parquet(exp / "tables" / "trials.parquet")
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    # The v1 ConvNet had no BatchNorm by default: the rebuilt rows say so, not today's after_relu.
    assert (trials["bn_position"] == "none").all()
    assert (trials["augmentation"] == "complex").all() and trials["zca_epsilon"].isna().all()
    assert trials["zoom_range"].notna().all() and trials["momentum"].notna().all()  # sgd, complex
    assert (exp / "report" / "report.md").exists() and len(result["summary"])
    assert pq.read_schema(exp / "tables" / "trials.parquet").metadata[b"schema_version"] == b"3"


def test_cost_columns_come_from_the_last_report_that_carries_them(tmp_path: Path) -> None:
    root = tmp_path / "exp"
    root.mkdir()
    (root / storage.EXPERIMENT_FILE).write_text(
        json.dumps({"experiment": "exp", "space": "batchnorm", "config_version": tables.CONFIG_VERSION})
    )
    base = {"dataset": "digits", "max_epochs": 2, "seed": 0, "model": "basenet"}
    write_trial(root, "measured", base)
    write_trial(root, "unmeasured", base)  # e.g. written before the cost fields existed
    result = root / "search" / "measured" / "result.json"
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    # Measured on the CPU at epoch 1, then restored onto a GPU node that measured again.
    rows[0].update(
        param_count=614,
        macs_per_image=9000,
        inference_s_per_image_b1=1e-3,
        inference_s_per_image_large=1e-4,
        inference_large_batch=256,
        inference_device="CPU: x",
    )
    rows[1].update(
        param_count=614,
        macs_per_image=9000,
        inference_s_per_image_b1=2e-4,
        inference_s_per_image_large=1e-5,
        inference_large_batch=128,
        inference_device="GPU: y",
    )
    result.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trials, _ = tables.build_tables(root)
    for name in tables.COST_FIELDS:
        assert trials.schema.field(name).metadata[b"doc"], name  # documented in the Parquet metadata
    t = trials.to_pandas().set_index("trial_id")
    assert t.loc["measured", "param_count"] == 614 and t.loc["measured", "macs_per_image"] == 9000
    assert t.loc["measured", "inference_s_per_image_b1"] == 2e-4
    assert t.loc["measured", "inference_large_batch"] == 128 and t.loc["measured", "inference_device"] == "GPU: y"
    assert t.loc["unmeasured", list(tables.COST_FIELDS)].isna().all()
    assert str(trials.schema.field("param_count").type) == "int64"


def test_a_failure_tune_retried_is_not_the_trials_error(tmp_path: Path) -> None:
    """error.txt keeps every failure of a trial, retried ones too (a killed worker): Tune's snapshot
    saying the trial TERMINATED makes it stopped (or completed), ERROR or no word from Tune an error."""
    root = tmp_path / "exp"
    root.mkdir()
    (root / storage.EXPERIMENT_FILE).write_text(json.dumps({"experiment": "exp", "space": "basenet", "max_epochs": 4}))
    params = {"dataset": "digits", "max_epochs": 4, "seed": 0, "model": "basenet"}
    for trial_id in ("retried", "failed", "unknown"):
        write_trial(root, trial_id, params, epochs=2)
        (root / "search" / trial_id / "error.txt").write_text(
            f"Failure # 1 (occurred at ...)\nworker of {trial_id} died"
        )
    snapshot = {
        "trial_data": [
            [json.dumps({"trial_id": t, "relative_logdir": t, "status": s}), "{}"]
            for t, s in (("retried", "TERMINATED"), ("failed", "ERROR"))
        ]
    }
    (root / "search" / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    (root / "search" / "experiment_state-2026-01-02_00-00-00.json").write_text(json.dumps(snapshot))  # the newest
    trials, _ = tables.build_tables(root)
    rows = trials.to_pandas().set_index("trial_id")
    assert rows.loc["retried", "status"] == "stopped" and pd.isna(rows.loc["retried", "error"])
    assert rows.loc["failed", "status"] == "error" and rows.loc["failed", "error"] == "worker of failed died"
    assert rows.loc["unknown", "status"] == "error"


def test_a_trial_ended_by_a_bad_config_is_a_row_with_its_knobs_as_given(tmp_path: Path) -> None:
    """A config the trial refused (trainables.failures: `bad config`, one report, no epoch) still makes a
    row: the knobs as given where they have the column's type, null where not, and the error."""
    root = tmp_path / "exp"
    root.mkdir()
    (root / storage.EXPERIMENT_FILE).write_text(json.dumps({"experiment": "exp", "space": "convnet", "max_epochs": 2}))
    params = {"dataset": "digits", "max_epochs": 2, "seed": 0, "model": "convnet", "kernel_size": 0, "depth": "deep"}
    folder = root / "search" / "bad"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    error = "bad config (ValueError): kernel_size must be >= 1, got 0"
    (folder / "result.json").write_text(json.dumps({"trial_id": "bad", "val_accuracy": None, "error": error}) + "\n")
    write_trial(root, "good", {**params, "kernel_size": 3, "depth": 2})
    trials, epochs = tables.build_tables(root)
    rows = trials.to_pandas().set_index("trial_id")
    assert rows.loc["bad", "status"] == "error" and rows.loc["bad", "error"] == error
    assert rows.loc["bad", "kernel_size"] == 0 and pd.isna(rows.loc["bad", "depth"])
    assert rows.loc["bad", "epochs_completed"] == 0 and rows.loc["good", "status"] == "completed"
    assert set(epochs.to_pandas()["trial_id"]) == {"good"}


def test_a_trial_tune_failed_before_it_ran_is_a_row_with_its_knobs_from_tunes_snapshot(tmp_path: Path) -> None:
    """A trial Tune aborted before its trainable ran (a reused worker it could not reset) leaves only
    error.txt in its folder: it is an error row, with the knobs Tune's snapshot recorded, not lost."""
    root = tmp_path / "exp"
    root.mkdir()
    (root / storage.EXPERIMENT_FILE).write_text(json.dumps({"experiment": "exp", "space": "basenet", "max_epochs": 1}))
    write_trial(root, "ran", {"dataset": "digits", "max_epochs": 1, "seed": 5, "model": "basenet"}, epochs=1)
    aborted = root / "search" / "aborted"
    aborted.mkdir()
    (aborted / "error.txt").write_text(
        "Failure # 1 (occurred at ...)\nTrainable runner reuse requires reset_config() to be implemented"
    )
    config = {"dataset": "digits", "max_epochs": 1, "seed": 6, "model": "basenet", "__trial_info__": "tune's own"}
    snapshot = {
        "trial_data": [
            [
                json.dumps({"trial_id": "aborted", "relative_logdir": "aborted", "status": "ERROR", "config": config}),
                "{}",
            ]
        ]
    }
    (root / "search" / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(snapshot))
    trials, epochs = tables.build_tables(root)
    rows = trials.to_pandas().set_index("trial_id")
    assert set(rows.index) == {"ran", "aborted"}
    assert rows.loc["aborted", "status"] == "error" and "reset_config" in rows.loc["aborted", "error"]
    assert rows.loc["aborted", "seed"] == 6 and rows.loc["aborted", "model"] == "basenet"
    assert rows.loc["aborted", "epochs_completed"] == 0
    assert set(epochs.to_pandas()["trial_id"]) == {"ran"}


def experiment_with(tmp_path: Path, max_epochs: int) -> Path:
    root = tmp_path / "exp"
    root.mkdir()
    meta = {"experiment": "exp", "space": "basenet", "max_epochs": max_epochs, "config_version": tables.CONFIG_VERSION}
    (root / storage.EXPERIMENT_FILE).write_text(json.dumps(meta))
    return root


def rewrite_result(root: Path, trial_id: str, keep) -> list[dict]:
    """Keep the result.json lines of trial `trial_id` for which keep(row) is true."""
    path = root / "search" / trial_id / "result.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    kept = [r for r in rows if keep(r)]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def test_status_and_test_accuracy_follow_the_last_epoch_reached_not_the_rows_counted(tmp_path: Path) -> None:
    """Issue 24's second trial: epochs 1-10 trained, epoch 5's row lost by Tune's logger before the fix
    (the trial restored the epoch-5 checkpoint). Ten epochs were reached: completed, with its test
    accuracy; the lost row stays lost (nothing else holds it), the nine others are there once."""
    root = experiment_with(tmp_path, max_epochs=10)
    write_trial(root, "t", {"dataset": "digits", "max_epochs": 10, "model": "basenet"}, epochs=10)
    rewrite_result(root, "t", keep=lambda r: r["epoch"] != 5)
    trials, epochs = (t.to_pandas() for t in tables.build_tables(root))
    row = trials.iloc[0]
    assert (row["status"], row["epochs_completed"], row["test_accuracy"]) == ("completed", 10, 0.55)
    assert list(epochs["epoch"]) == [1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_an_epoch_reported_twice_is_one_row_the_later_report(tmp_path: Path) -> None:
    """A worker killed between report 2 and the registration of its checkpoint: the retry restores
    checkpoint 1 and reports epoch 2 again; the table keeps the later report, whose weights epoch 3
    was trained from."""
    root = experiment_with(tmp_path, max_epochs=3)
    write_trial(root, "t", {"dataset": "digits", "max_epochs": 3, "model": "basenet"}, epochs=3)
    path = root / "search" / "t" / "result.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    replay = {**rows[1], "val_accuracy": 0.61, "iterations_since_restore": 1}
    path.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], rows[1], replay, rows[2]]))
    trials, epochs = (t.to_pandas() for t in tables.build_tables(root))
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs.set_index("epoch").loc[2, "val_accuracy"] == 0.61
    assert trials.iloc[0]["epochs_completed"] == 3 and trials.iloc[0]["status"] == "completed"


def test_a_phase_run_again_is_read_from_its_own_folder(tmp_path):
    """An extended search's second Ray Tune run (search-2) belongs to the search phase; folders that only
    look alike do not."""
    import pyarrow.fs as pafs

    from analysis.tables import phase_of, phase_runs, run_name

    for name in ("search", "search-2", "search-10", "confirm", "search-x", "searching", "tables"):
        (tmp_path / name).mkdir()
    fs = pafs.LocalFileSystem()
    assert phase_runs(fs, str(tmp_path), "search") == ["search", "search-2", "search-10"]
    assert phase_runs(fs, str(tmp_path), "confirm") == ["confirm"]
    assert [run_name("search", n) for n in (1, 2)] == ["search", "search-2"]
    assert (phase_of("search-2"), phase_of("confirm-3"), phase_of("search")) == ("search", "confirm", "search")
