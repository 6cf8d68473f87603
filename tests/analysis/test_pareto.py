"""The Pareto front on synthetic data with a known answer; the report's figure and table from it."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import pareto
from analysis.report import build_report
from tests.analysis.synthetic import trial_row, write_experiment

GOALS = [("val_accuracy", "max"), ("param_count", "min")]


def dominated_by_any(point, others, modes):
    """Brute force, written apart from the module's vectorised rule: some other point is no worse on
    every objective and better on one."""
    sign = [-1 if m == "max" else 1 for m in modes]
    p = [v * s for v, s in zip(point, sign, strict=True)]
    for o in others:
        q = [v * s for v, s in zip(o, sign, strict=True)]
        if all(b <= a for a, b in zip(p, q, strict=True)) and any(b < a for a, b in zip(p, q, strict=True)):
            return True
    return False


def test_non_dominated_keeps_exactly_the_points_nothing_beats():
    points = np.array([[0.9, 300], [0.8, 100], [0.85, 300], [0.7, 100], [0.6, 50], [0.9, 300]])
    mask = pareto.non_dominated(points, ["max", "min"])
    # (0.85, 300) loses to (0.9, 300); (0.7, 100) to (0.8, 100); the two equal (0.9, 300) both stay.
    assert mask.tolist() == [True, True, False, False, True, True]
    rng = np.random.default_rng(0)
    cloud = rng.random((60, 3))
    modes = ["max", "min", "min"]
    mask = pareto.non_dominated(cloud, modes)
    for i, p in enumerate(cloud):
        assert mask[i] == (not dominated_by_any(p, np.delete(cloud, i, axis=0), modes)), i
    assert pareto.non_dominated(np.zeros((0, 2)), ["max", "min"]).tolist() == []


def rows_with_costs():
    # (trial, val_accuracy, param_count): a, b, d on the front; c dominated by b; e stopped early looks best
    # on both but has a lower fidelity; f errored.
    spec = [("a", 0.90, 30_000), ("b", 0.85, 20_000), ("c", 0.80, 25_000), ("d", 0.70, 10_000)]
    rows = [
        {**trial_row(t, best_val=acc, learning_rate=0.01 * (i + 1)), "param_count": p}
        for i, (t, acc, p) in enumerate(spec)
    ]
    rows.append({**trial_row("e", status="stopped", epochs=1, best_val=0.99, learning_rate=0.5), "param_count": 5})
    rows.append({**trial_row("f", status="error", epochs=2, best_val=0.95, learning_rate=0.6), "param_count": 5})
    # The confirmation stage retrained b's config with two new seeds.
    for seed, acc in ((1, 0.84), (2, 0.86)):
        rows.append(
            {**trial_row(f"b{seed}", phase="confirm", test=acc, seed=seed, learning_rate=0.02), "param_count": 20_000}
        )
    return rows


def test_the_front_is_the_undominated_full_budget_search_trials_with_their_confirmed_intervals():
    trials = pd.DataFrame(rows_with_costs())
    front = pareto.pareto_front(trials, GOALS)
    assert front["trial_id"].tolist() == ["a", "b", "d"]  # best accuracy first
    assert front["rank"].tolist() == [1, 2, 3]
    pool = pareto.candidates(trials, GOALS)
    assert sorted(pool["trial_id"]) == ["a", "b", "c", "d"]
    for row in front.itertuples():
        others = pool[pool["trial_id"] != row.trial_id][["val_accuracy", "param_count"]].to_numpy()
        assert not dominated_by_any((row.val_accuracy, row.param_count), others, ["max", "min"])
    b = front.set_index("trial_id").loc["b"]
    assert b["confirm_n"] == 2 and b["confirm_mean"] == pytest.approx(0.85)
    assert b["confirm_ci_low"] < 0.84 and b["confirm_ci_high"] > 0.86
    assert (front.set_index("trial_id").loc[["a", "d"], "confirm_n"] == 0).all()
    assert "learning_rate=" in b["config"]


def test_the_report_of_a_two_objective_experiment_draws_the_front_and_writes_its_table(tmp_path):
    exp = write_experiment(tmp_path / "mo", rows_with_costs())
    meta = json.loads((exp / "experiment.json").read_text())
    (exp / "experiment.json").write_text(
        json.dumps({**meta, "objectives": [{"metric": m, "mode": d} for m, d in GOALS]})
    )
    build_report(str(exp))
    table = pd.read_parquet(exp / "report" / "pareto.parquet")
    assert table["trial_id"].tolist() == ["a", "b", "d"]
    assert (exp / "report" / "pareto_front.png").stat().st_size > 10_000
    md = (exp / "report" / "report.md").read_text()
    assert "## Pareto front" in md and "pareto_front.png" in md

    # The same experiment recorded with one objective: no front, and the stale files are gone.
    (exp / "experiment.json").write_text(json.dumps(meta))
    build_report(str(exp))
    assert not (exp / "report" / "pareto.parquet").exists()
    assert not (exp / "report" / "pareto_front.png").exists()
    assert "Pareto" not in (exp / "report" / "report.md").read_text()
