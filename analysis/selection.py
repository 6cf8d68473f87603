"""What the driver reads back from the trials table: the configurations the confirmation stage re-runs,
and the few lines it prints at the end. Pure pandas on trials.parquet; no Ray, no TensorFlow."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis import summary
from trainables.config import TrialConfig, knob_types

# Knobs a confirmation run sets itself rather than taking from the search trial.
RUN_KNOBS = ("seed", "max_epochs", "patience")


def confirm_configs(trials: pd.DataFrame, top: int, repeats: int, max_epochs: int) -> list[dict[str, Any]]:
    """The confirmation stage's trials: the `top` best distinct configs of the search in the ranking's
    order (analysis.summary.ranking: the largest budget reached first, then validation accuracy), each
    `repeats` times with seeds no search trial used, at the full budget and without early stopping
    (patience 0). Configs that reached a smaller budget come in only where fewer than `top` reached the
    largest: ASHA may let a single trial through, and `--confirm-top 2` still confirms two."""
    search = trials[trials["phase"] == "search"]
    ranked = summary.ranking(search)
    if ranked.empty:
        return []
    names = [k for k in knob_types() if k not in RUN_KNOBS and k in ranked]
    best: list[dict[str, Any]] = []
    for row in ranked.to_dict("records"):
        config = TrialConfig.from_params({k: row[k] for k in names}).to_dict()
        if config not in best:  # grid repeats: one config, several seeds
            best.append(config)
    first_seed = int(search["seed"].max()) + 1
    return [
        {**c, "seed": first_seed + r, "max_epochs": max_epochs, "patience": 0}
        for c in best[:top]
        for r in range(repeats)
    ]


def not_confirmed(configs: list[dict[str, Any]], trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The confirmation configs (seed included) that no earlier confirmation trial ran: a confirmation
    asked afresh (docs/searches.md, "Extending a search") never runs a trial twice."""
    confirm = trials[trials["phase"] == "confirm"]
    names = [k for k in knob_types() if k in confirm]
    done = [TrialConfig.from_params({k: row[k] for k in names}).to_dict() for row in confirm.to_dict("records")]
    return [c for c in configs if TrialConfig.from_params(c).to_dict() not in done]


def confirmed_lines(trials: pd.DataFrame) -> list[str]:
    """Test accuracy of each confirmed config over its seeds, as printable lines."""
    confirm = trials[trials["phase"] == "confirm"]
    if confirm.empty:
        return []
    names = [k for k in knob_types() if k != "seed" and k in confirm and confirm[k].nunique() > 1] or ["model"]
    stats = confirm.groupby(names, dropna=False)["test_accuracy"].agg(["mean", "std", "count"])
    return ["confirmed (test accuracy over seeds):", stats.to_string(float_format=lambda v: f"{v:.4f}")]


def outcome(trials: pd.DataFrame, folder: str) -> tuple[list[str], bool]:
    """(lines to print, whether every trial failed): counts by status, the best trial (full budget
    first), where the tables are."""
    counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items())
    lines = [f"\n{len(trials)} trials: {counts}"]
    ranked = summary.ranking(trials)
    if ranked.empty:
        lines.append("every trial failed; errors:")
        lines += [f"  {t}: {e}" for t, e in zip(trials["trial_id"], trials["error"], strict=True)]
        lines.append(f"tables: {folder}")
        return lines, True
    full = ranked[ranked["status"] == "completed"]
    best = (full if not full.empty else ranked).sort_values("best_val_accuracy", ascending=False).iloc[0]
    budget = "full budget" if not full.empty else "no trial reached the full budget"
    test = best["test_accuracy"]
    lines.append(
        f"best trial ({budget}): {best['trial_id']}  val_accuracy={best['best_val_accuracy']:.4f}"
        + (f"  test_accuracy={test:.4f}" if test is not None and not pd.isna(test) else "")
    )
    lines.append(f"tables: {folder}/trials.parquet, {folder}/epochs.parquet")
    return lines, False
