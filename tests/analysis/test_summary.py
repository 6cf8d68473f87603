"""analysis.summary on synthetic tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import bn_study_rows, epoch_rows, trial_row

from analysis import summary


def frames(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pyarrow as pa

    from analysis import tables

    trials = pa.Table.from_pylist(rows, schema=tables.TRIALS_SCHEMA).to_pandas()
    epochs = pa.Table.from_pylist([e for r in rows for e in epoch_rows(r)], schema=tables.EPOCHS_SCHEMA).to_pandas()
    return trials, epochs


def paired(s: pd.DataFrame, a: str, b: str, metric: str = "test_accuracy") -> pd.Series:
    rows = s[(s["kind"] == "paired") & (s["metric"] == metric) & (s["level"] == a) & (s["level_b"] == b)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_a_level_better_by_exactly_005_on_every_seed_gets_a_ci_holding_005_and_not_0() -> None:
    s = summary.build_summary(*frames(bn_study_rows(effect=0.05, seeds=5))).to_pandas()
    row = paired(s, "after_relu", "before_relu")
    assert row["n"] == 5
    assert row["ci_low"] <= 0.05 <= row["ci_high"]
    assert row["ci_low"] > 0
    assert row["p_holm"] < 0.05
    assert row["verdict"].startswith("bn_position: after_relu beats before_relu by 5.0 points")


def test_a_noisy_005_effect_is_found_with_an_interval_around_it() -> None:
    rows = bn_study_rows(effect=0.05, seeds=8)
    rng = np.random.default_rng(1)
    for r in rows:  # per-run noise on top of the shared per-seed noise
        if r["phase"] == "confirm":
            r["test_accuracy"] += float(rng.normal(0, 0.005))
    s = summary.build_summary(*frames(rows)).to_pandas()
    row = paired(s, "after_relu", "before_relu")
    assert row["ci_low"] < 0.05 < row["ci_high"] and row["ci_low"] > 0
    assert "beats" in row["verdict"]


def test_identical_levels_are_settled_as_no_difference_larger_than_the_resolution() -> None:
    s = summary.build_summary(*frames(bn_study_rows())).to_pandas()
    row = paired(s, "before_relu", "none")
    assert row["value"] == 0.0
    assert row["outcome"] == "equivalent" and row["equivalence_bound"] == 0.0 and row["resolution"] == 0.01
    assert "no difference larger than 1.0 points" in row["verdict"] and "within +-0.0 points" in row["verdict"]
    assert row["alpha"] == pytest.approx(0.05 / 3) and row["looks"] == 1 and row["mdd"] == 0.0
    # And the Holm family is the three bn_position comparisons of one metric.
    assert "Holm across 3 comparisons" in row["note"]


def test_an_early_stopped_trial_never_ranks_above_a_full_budget_trial() -> None:
    rows = [
        trial_row("full_low", best_val=0.30, bn_position="none"),
        trial_row("full_high", best_val=0.50, bn_position="after_relu"),
        trial_row("stopped_best", status="stopped", epochs=1, best_val=0.99, bn_position="before_relu"),
        trial_row("stopped_mid", status="stopped", epochs=2, best_val=0.95, bn_position="before_relu"),
        {**trial_row("failed", best_val=0.999, bn_position="none"), "status": "error", "error": "NaN loss"},
    ]
    s = summary.build_summary(*frames(rows)).to_pandas()
    ranking = s[s["kind"] == "ranking"].sort_values("rank")
    assert ranking["trial_id"].tolist() == ["full_high", "full_low", "stopped_mid", "stopped_best"]
    assert ranking["rank"].tolist() == [1, 2, 3, 4]
    assert ranking["test_accuracy"].isna().tolist() == [False, False, True, True]
    assert "failed" not in set(s["trial_id"].dropna())


def test_repeated_configurations_get_mean_std_and_t_interval() -> None:
    s = summary.build_summary(*frames(bn_study_rows(seeds=4))).to_pandas()
    conf = s[(s["kind"] == "config") & (s["metric"] == "test_accuracy")]
    assert len(conf) == 3 and (conf["n"] == 4).all()
    best = conf.sort_values("rank").iloc[0]
    assert "bn_position=after_relu" in best["config"]
    assert best["ci_low"] < best["value"] < best["ci_high"]
    assert best["std"] > 0
    # Statistics rest on the confirm phase only: the search trials were selected, so they would bias it.
    assert set(conf["phase"]) == {"confirm"}


def test_single_runs_give_no_config_or_paired_rows() -> None:
    rows = [
        trial_row(f"t{i}", best_val=0.5 + i / 100, bn_position=bn)
        for i, bn in enumerate(["none", "before_relu", "after_relu"])
    ]
    s = summary.build_summary(*frames(rows)).to_pandas()
    assert not s["kind"].isin(["config", "paired"]).any()


def test_marginals_use_one_matched_budget() -> None:
    trials, epochs = frames(bn_study_rows())
    budget, score = summary.matched_budget(trials[trials["phase"] == "search"], epochs)
    assert budget == 1  # 12 search trials reached epoch 1, only 4 reached epoch 3 (< MIN_TRIALS_AT_BUDGET)
    assert len(score) == 12
    s = summary.build_summary(trials, epochs).to_pandas()
    marg = s[s["kind"] == "marginal"]
    assert set(marg["knob"]) == {"bn_position", "optimizer"}  # learning_rate is continuous: no levels
    assert (marg["budget_epochs"] == 1).all() and marg.groupby("knob")["n"].sum().eq(12).all()


def test_every_summary_column_is_documented() -> None:
    for field in summary.SUMMARY_SCHEMA:
        assert field.metadata and len(field.metadata[b"doc"]) > 10, field.name
    assert summary.SUMMARY_SCHEMA.metadata[b"table"] == b"summary"
    for kind in summary.KINDS:
        assert f"`{kind}`" in summary.__doc__


@pytest.mark.parametrize(
    "values, discrete",
    [
        (["a", "b", "a"], True),
        ([0.1, 0.2, 0.1, 0.2], True),
        ([0.1, 0.2, 0.3], False),
        ([1, 2, 3], True),
        (list(range(20)), False),
        ([True, False], True),
    ],
)
def test_is_discrete(values: list, discrete: bool) -> None:
    assert summary.is_discrete(pd.Series(values)) is discrete


def test_the_readme_documents_every_summary_column() -> None:
    from pathlib import Path

    readme = (Path(summary.__file__).parent / "README.md").read_text()
    for name, _, _ in summary.SUMMARY_COLUMNS:
        assert f"| `{name}` |" in readme, name
