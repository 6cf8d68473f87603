"""Smoke runs of every benchmark script on tiny inputs (`--quick`): each runs with one command and
leaves its figures (a CSV with the expected columns). They assert that, not that anything is fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

PROJECT = Path(__file__).resolve().parents[2]


def bench(tmp_path: Path, name: str, *extra: str, workdir: bool = True, timeout: float = 600) -> pd.DataFrame:
    """Run benchmarks/<name>.py --quick with its figures and scratch folders under tmp_path."""
    out = tmp_path / f"{name}.csv"
    cmd = [sys.executable, str(PROJECT / "benchmarks" / f"{name}.py"), "--quick", "--out", str(out), *extra]
    if workdir:
        cmd += ["--workdir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file(), f"{name} wrote no figures"
    frame = pd.read_csv(out)
    assert not frame.empty
    assert "== " in proc.stdout  # the printed table
    return frame


def test_input_pipeline_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "input_pipeline", workdir=False)
    assert list(frame["policy"]) == ["simple", "complex", "crop_flip", "whitening"]
    assert (frame["numpy_gather_img_per_s"] > 0).all()  # the gather before issue 22, side by side
    for col in ("pipeline_img_per_s", "legacy_img_per_s", "fit_prebuilt_img_per_s", "fit_pipeline_img_per_s"):
        assert (frame[col] > 0).all(), col
    ratio = frame["pipeline_img_per_s"] / frame["legacy_img_per_s"]
    assert ((frame["speedup"] - ratio).abs() <= 0.01 * ratio + 0.01).all()  # both sides rounded
    # Keras 2's ImageDataGenerator (tf-keras, the bench extra) ran beside it, in its own process.
    assert (frame["idg_img_per_s"] > 0).all(), "install the bench extra (tf-keras)"
    ratio = frame["pipeline_img_per_s"] / frame["idg_img_per_s"]
    assert ((frame["speedup_idg"] - ratio).abs() <= 0.01 * ratio + 0.01).all()


def test_pipeline_memory_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "pipeline_memory", "--policies", "simple", "--steps", "5", workdir=False)
    assert list(frame["variant"]) == ["tf_gather", "numpy_gather", "tensor_copy"]
    assert frame["added_private_mb"].notna().all()


def test_analysis_scale_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "analysis_scale")
    assert list(frame["trials"]) == [20, 50] and list(frame["epoch_rows"]) == [600, 1500]
    assert (frame["analysis_s"] > 0).all() and (frame["peak_rss_mb"] > 0).all()


def test_tpe_ask_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "tpe_ask", workdir=False)
    assert list(frame["trials"]) == [100, 100, 300, 300] and list(frame["sampler"]) == ["bounded", "optuna"] * 2
    assert (frame["ms_per_ask"] > 0).all()


def test_atomic_storage_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "atomic_storage")
    assert list(frame["trials"]) == [20] and (frame["tune_ms"] > 0).all() and (frame["atomic_ms"] > 0).all()
    # The ratio is of the unrounded times; the times are printed to 0.1 ms (+-0.05 each), which at the smoke
    # run's ~2 ms moves their quotient by up to 0.05 * (1 + ratio) / tune_ms.
    slack = 0.05 * (1 + frame["ratio"]) / frame["tune_ms"] + 0.01
    assert ((frame["ratio"] - frame["atomic_ms"] / frame["tune_ms"]).abs() <= slack).all()
    assert frame["same_files"].all() and (frame["partial_files_left"] == 0).all()  # all copied, all renamed


def test_searcher_quality_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "searcher_quality", workdir=False)
    assert {"trials", "tpe_mean_best", "random_mean_best", "tpe_at_least_random"} <= set(frame.columns)
    assert frame["trials"].max() == 12
    # Best-so-far never exceeds the table's optimum and never decreases with more trials.
    assert (frame["tpe_mean_best"] <= frame["table_optimum"] + 1e-9).all()
    assert frame["random_mean_best"].is_monotonic_increasing
    table = pd.read_csv(tmp_path / "searcher_quality_table.csv")
    assert len(table) == 3 * 2 * 1  # bn placements x optimizers x learning rates


def test_replay_schedulers_smoke(tmp_path: Path) -> None:
    """On the stored digits curve set: every searcher x the quick settings, regret never negative and
    never above the table's range, FIFO spending whole trainings."""
    frame = bench(tmp_path, "replay_schedulers", "--figure", str(tmp_path / "replay.png"))
    assert set(frame["searcher"]) == {"fidelity", "stock", "random"}
    assert set(frame["setting"]) == {"fifo", "asha g1 b1", "asha g2 b1"}
    assert (frame["seeds"] == 2).all() and (frame["mean_regret_points"] >= 0).all()
    assert (frame["mean_normalised"] <= 1).all()
    fifo = frame[(frame["setting"] == "fifo") & (frame["epochs_spent"] == frame["budget_epochs"])]
    assert (fifo["mean_trials"] == fifo["budget_epochs"] / fifo["max_epochs"]).all()
    asha = frame[(frame["setting"] == "asha g1 b1") & (frame["epochs_spent"] == frame["budget_epochs"])]
    assert (asha["mean_trials"] > fifo["mean_trials"].max()).all()  # early stopping tries more configs
    assert (tmp_path / "replay.png").stat().st_size > 0
    rung_rows = pd.read_csv(tmp_path / "replay_schedulers_rungs.csv")
    assert set(rung_rows["grace_period"]) == {1, 2, 3} and rung_rows["spearman"].between(-1, 1).all()


@pytest.mark.slow
def test_harness_overhead_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "harness_overhead")
    row = frame.iloc[0]
    assert row["trials"] == 2 and row["harness_wall_s"] > 0 and row["plain_wall_s"] > 0
    assert row["startup_in_trial_median_s"] > 0
    # Same configs, same seeds, same pipeline: the plain loop reaches the harness's accuracy.
    assert abs(row["harness_best_val_accuracy"] - row["plain_best_val_accuracy"]) < 0.05


@pytest.mark.slow
def test_asha_vs_fifo_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "asha_vs_fifo")
    assert set(frame["scheduler"]) == {"fifo", "asha"}
    assert frame["same_configs"].all()
    fifo = frame[frame["scheduler"] == "fifo"].iloc[0]
    assert fifo["total_epochs"] == 2 * 2  # FIFO trains every config its full budget


@pytest.mark.slow
def test_memory_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "memory")
    row = frame.iloc[0]
    assert row["trial_processes"] == 2 and row["samples"] > 0
    assert row["peak_session_pss_mb"] > row["peak_trial_uss_mb_max"] > 0


@pytest.mark.slow
def test_bookkeeping_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "bookkeeping")  # workers reused, as run_search (a fresh process per trial is slow)
    assert (frame["trials"] == 20).all() and (frame["errored_trials"] == 0).all()
    assert frame["reuse_actors"].all() and (frame["settings"] == "issue22").all()
    assert (frame["checkpoints_per_trial_max"] <= 2).all()  # at the end, at most the kept ones
    assert list(frame["export_trials"]) == [5, 10, 20]
    assert (frame["harness_ms_per_trial"] > 0).all()


@pytest.mark.slow
def test_reference_study_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "reference_study")
    assert len(frame) == 6  # BaseNet x 3 BN placements; ConvNet (BN after ReLU) x 3 augmentation policies
    assert (frame["epochs"] == 1).all()
    assert frame["test_accuracy"].notna().all()


@pytest.mark.slow
def test_warm_workers_smoke(tmp_path: Path) -> None:
    frame = bench(tmp_path, "warm_workers", "--trials", "4", "--fresh-trials", "2", "--limited-trials", "4")
    row = frame.iloc[0]
    assert row["reused_worker_processes"] == 1 and row["fresh_worker_processes"] == 2
    assert row["trials_limited"] == 4 and 1 <= row["limited_worker_processes"] <= 3  # a worker runs 2 at least
    assert row["limited_rss_change"] == row["limited_rss_change"]  # not NaN
    assert row["startup_reused_median_s"] > 0 and row["rss_growth"] == row["rss_growth"]  # not NaN
    assert (tmp_path / "warm_workers_trace.csv").is_file()


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """The GPU check's CPU dry run (on a machine without a GPU it also says so): the same code path,
    two trials sharing the machine against one, every trial logged."""
    frame = bench(tmp_path, "gpu_check", "--cpu-images", "600")
    assert list(frame["run"]) == ["whole", "shared"] and (frame["errors"] == 0).all()
    assert list(frame["trials"]) == [1, 2] and (frame["aggregate_img_per_s"] > 0).all()
    trials = pd.read_csv(tmp_path / "gpu_check_trials.csv")
    assert len(trials) == 3 and (trials["epochs_done"] == 1).all()
