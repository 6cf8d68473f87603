"""Synthetic experiment folders with known answers: real Parquet tables in the real schema, no Ray.

A plain module (not conftest) so that tests import it by a name no other conftest.py shares."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from analysis import tables
from experiment import storage
from trainables.config import TrialConfig


def trial_row(
    trial_id: str,
    phase: str = "search",
    status: str = "completed",
    epochs: int = 3,
    best_val: float = 0.8,
    test: float | None = None,
    **knobs: Any,
) -> dict[str, Any]:
    config = TrialConfig(**{"dataset": "digits", "max_epochs": 3, **knobs}).to_row()  # nulls where not read
    # BaseNet's cost on digits (32x32x3, 10 classes), as trainables.cost counts it, per bn_position.
    params = {"none": 23_432, "before_relu": 23_498, "after_relu": 23_520}.get(config.get("bn_position"), 23_432)
    bn = config.get("bn_position") in ("before_relu", "after_relu")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return {
        "experiment": "synthetic",
        "space": "batchnorm",
        "phase": phase,
        "trial_id": trial_id,
        "status": status,
        **config,
        "epochs_completed": epochs,
        "stopped_early": status == "stopped",
        "best_val_accuracy": best_val,
        "val_accuracy": best_val,
        "val_loss": 1.0 - best_val,
        "test_accuracy": (best_val if test is None else test) if status == "completed" else None,
        "train_time_s": 10.0 * epochs,
        "param_count": params,
        "macs_per_image": 613_300 + 6_304 * bn,
        "inference_s_per_image_b1": 2e-4 + 1e-5 * bn,
        "inference_s_per_image_large": 2e-5 + 1e-6 * bn,
        "inference_large_batch": 256,
        "inference_device": "CPU: synthetic",
        "node": "host:1",
        "gpus": 0.0,
        "started_at": start,
        "ended_at": start + dt.timedelta(seconds=10 * epochs),
        "error": None,
        "git_sha": "abc",
        "tensorflow_version": "2.21",
        "keras_version": "3.15",
        "ray_version": "2.60",
        "optuna_version": "5.0",
    }


def epoch_rows(row: dict[str, Any], curve: list[float] | None = None) -> list[dict[str, Any]]:
    """A rising learning curve that ends at the trial's best validation accuracy, or the given `curve`
    (validation accuracy per epoch)."""
    n, best = row["epochs_completed"], row["best_val_accuracy"]
    out = []
    for e in range(1, n + 1):
        val = best - 0.02 * (n - e) if curve is None else curve[e - 1]
        out.append(
            {
                "trial_id": row["trial_id"],
                "epoch": e,
                "loss": 1.5 / e,
                "accuracy": min(1.0, val + 0.05),
                "val_loss": 1.6 / e,
                "val_accuracy": val,
                "learning_rate": row["learning_rate"],
                "epoch_time_s": 10.0,
            }
        )
    return out


def write_experiment(
    root: Path, rows: list[dict[str, Any]], epochs: list[dict[str, Any]] | None = None, meta: dict | None = None
) -> Path:
    """The experiment folder with its tables; `epochs`: the epochs table's rows (default: epoch_rows of
    each trial); `meta`: more of experiment.json."""
    root.mkdir(parents=True, exist_ok=True)
    record = {"experiment": root.name, "space": "batchnorm", **(meta or {})}
    (root / storage.EXPERIMENT_FILE).write_text(json.dumps(record))
    trials = pa.Table.from_pylist(rows, schema=tables.TRIALS_SCHEMA)
    epoch_list = [e for r in rows for e in epoch_rows(r)] if epochs is None else epochs
    epochs_table = pa.Table.from_pylist(epoch_list, schema=tables.EPOCHS_SCHEMA)
    fs, path = storage.resolve(root)
    tables.write_table(trials, fs, storage.join(path, "tables", "trials.parquet"))
    tables.write_table(epochs_table, fs, storage.join(path, "tables", "epochs.parquet"))
    return root


def bn_study_rows(effect: float = 0.05, seeds: int = 5, noise_seed: int = 0) -> list[dict[str, Any]]:
    """A search (ASHA-like) plus a confirm phase where after_relu beats before_relu by exactly `effect`
    on every seed, and 'none' equals before_relu on every seed."""
    rng = np.random.default_rng(noise_seed)
    rows = []
    for i in range(12):  # search: 4 full budget, 8 stopped at the 1-epoch rung
        full = i < 4
        rows.append(
            trial_row(
                f"s{i:02d}",
                epochs=3 if full else 1,
                status="completed" if full else "stopped",
                best_val=0.6 + 0.02 * i if full else 0.9 - 0.01 * i,  # stopped ones look better: must not rank first
                bn_position=("none", "before_relu", "after_relu")[i % 3],
                learning_rate=float(10 ** rng.uniform(-4, -1)),
                optimizer=("sgd", "adam")[i % 2],
            )
        )
    for s in range(1, seeds + 1):
        base = 0.7 + rng.normal(0, 0.03)  # seed-to-seed noise, shared by the paired runs
        for bn, acc in (("before_relu", base), ("none", base), ("after_relu", base + effect)):
            rows.append(
                trial_row(
                    f"c{bn}{s}",
                    phase="confirm",
                    seed=s,
                    best_val=acc,
                    test=acc,
                    bn_position=bn,
                    learning_rate=0.01,
                    optimizer="adam",
                )
            )
    return rows
