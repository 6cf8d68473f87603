"""analysis.importance: Optuna's fANOVA on a study rebuilt from the trials table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from synthetic import epoch_rows, trial_row

from analysis import importance, tables


def frames(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pa.Table.from_pylist(rows, schema=tables.TRIALS_SCHEMA).to_pandas(),
        pa.Table.from_pylist([e for r in rows for e in epoch_rows(r)], schema=tables.EPOCHS_SCHEMA).to_pandas(),
    )


def search_rows(n: int) -> list[dict]:
    """bn_position decides the accuracy; learning_rate and optimizer are noise."""
    rng = np.random.default_rng(0)
    effect = {"none": 0.4, "before_relu": 0.6, "after_relu": 0.8}
    rows = []
    for i in range(n):
        bn = ("none", "before_relu", "after_relu")[i % 3]
        rows.append(
            trial_row(
                f"t{i:02d}",
                best_val=effect[bn] + float(rng.normal(0, 0.01)),
                bn_position=bn,
                learning_rate=float(10 ** rng.uniform(-4, -1)),
                optimizer=("sgd", "adam")[i % 2],
            )
        )
    return rows


def test_the_knob_that_decides_the_accuracy_is_the_most_important() -> None:
    values, budget, n, note = importance.param_importances(*frames(search_rows(24)))
    assert list(values)[0] == "bn_position" and values["bn_position"] > 0.8
    assert set(values) == {"bn_position", "learning_rate", "optimizer"}  # only knobs that vary
    assert budget == 3 and n == 24 and "24 search trials" in note
    assert sum(values.values()) == __import__("pytest").approx(1.0)


def test_too_few_trials_are_skipped_with_a_note() -> None:
    values, _, n, note = importance.param_importances(*frames(search_rows(5)))
    assert values == {} and n == 5
    assert "skipped" in note and "need at least" in note
    rows = importance.importance_rows(*frames(search_rows(5)))
    assert len(rows) == 1 and rows[0].get("knob") is None and "skipped" in rows[0]["note"]


def test_distributions_follow_the_column_types() -> None:
    import optuna.distributions as d

    trials, _ = frames(search_rows(6))
    assert isinstance(importance.distribution(trials["bn_position"], "bn_position"), d.CategoricalDistribution)
    lr = importance.distribution(trials["learning_rate"], "learning_rate")
    assert isinstance(lr, d.FloatDistribution) and lr.log
    assert isinstance(importance.distribution(pd.Series([16, 32, 64]), "batch_size"), d.IntDistribution)
    assert not importance.distribution(pd.Series([0.0, 0.1]), "weight_decay").log  # 0 cannot be log-scaled
    assert isinstance(importance.distribution(pd.Series([True, False]), "nesterov"), d.CategoricalDistribution)


def conditional_rows(n: int = 24) -> list[dict]:
    """The model decides the accuracy; `depth` is read by the ConvNet only (null for BaseNet) and is
    noise within the ConvNet trials."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        model = ("basenet", "convnet")[i % 2]
        shape = {"depth": int(rng.integers(5, 8))} if model == "convnet" else {}
        rows.append(
            trial_row(
                f"t{i:02d}",
                best_val=(0.4 if model == "basenet" else 0.8) + float(rng.normal(0, 0.01)),
                model=model,
                bn_position="none",
                learning_rate=float(10 ** rng.uniform(-4, -1)),
                **shape,
            )
        )
    return rows


def test_a_knob_null_for_half_the_trials_does_not_borrow_the_models_importance() -> None:
    trials, epochs = frames(conditional_rows())
    assert trials.loc[trials["model"] == "basenet", "depth"].isna().all()
    # Counted as a level, "not read" would stand in for the model and look important:
    counted = trials.assign(depth=trials["depth"].fillna(0).astype("int64"))
    as_level, *_ = importance.param_importances(counted, epochs)
    assert as_level["depth"] > 0.1 and as_level["depth"] > 10 * as_level["learning_rate"]
    # Skipped, it is left out and named; the model keeps the credit.
    values, _, n, note = importance.param_importances(trials, epochs)
    assert "depth" not in values and list(values)[0] == "model" and values["model"] > 0.8
    assert "not read by every trial: depth" in note and n == 24


def test_above_the_sample_size_fanova_runs_on_a_seeded_sample_and_says_so(monkeypatch) -> None:
    monkeypatch.setattr(importance, "SAMPLE", 30)
    values, _, n, note = importance.param_importances(*frames(search_rows(48)))
    assert n == 30 and "over 48 search trials (a random sample of 30 of them" in note
    assert max(values, key=values.get) == "bn_position"  # the sample still finds the knob that decides
    again = importance.param_importances(*frames(search_rows(48)))
    assert again[0] == values  # seeded: the same report every time
