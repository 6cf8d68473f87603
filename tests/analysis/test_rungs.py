"""Rung diagnostics on synthetic learning curves whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import rungs

RHO_OK = rungs.RHO_WARN
FIFO = {"kind": "fifo", "grace_period": 1, "reduction_factor": 3, "brackets": 1, "stop_on": "last", "max_t": 9}


def frames(curves: dict[str, list[float]], max_epochs: int = 9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials and epochs tables (only the columns rungs reads) for curves {trial_id: val_accuracy per epoch}."""
    trials = pd.DataFrame(
        [
            {
                "trial_id": t,
                "phase": "search",
                "max_epochs": max_epochs,
                "status": "completed" if len(c) >= max_epochs else "stopped",
            }
            for t, c in curves.items()
        ]
    )
    epochs = pd.DataFrame(
        [{"trial_id": t, "epoch": e, "val_accuracy": v} for t, c in curves.items() for e, v in enumerate(c, 1)]
    )
    return trials, epochs


def parallel(n: int = 12, epochs: int = 9, gap: float = 0.01) -> dict[str, list[float]]:
    """Curves that never cross: trial i sits i gaps above trial 0 at every epoch."""
    return {f"t{i:02d}": [0.2 + 0.05 * e + gap * i for e in range(epochs)] for i in range(n)}


def crossing(n: int = 12, epochs: int = 9, swap_after: int = 3) -> dict[str, list[float]]:
    """Fast starters end worst: up to epoch `swap_after` trial i ranks i-th from the bottom, from the
    next epoch on i-th from the top (a high learning rate leads early and loses later)."""
    out = {}
    for i in range(n):
        early = [0.3 + 0.02 * e + 0.01 * i for e in range(swap_after)]
        late = [0.5 + 0.03 * e + 0.01 * (n - 1 - i) for e in range(epochs - swap_after)]
        out[f"t{i:02d}"] = early + late
    return out


def by_rung(rows: list[dict], metric: str) -> dict[int, float]:
    return {int(r["level"]): r["value"] for r in rows if r["metric"] == metric}


def test_rungs_are_rays() -> None:
    assert rungs.rung_epochs(1, 3, 1, 27) == [1, 3, 9]
    assert rungs.rung_epochs(2, 3, 3, 27) == [2, 6, 18]
    assert rungs.rung_epochs(1, 3, 3, 30) == [1, 3, 9, 27]
    assert rungs.rung_epochs(3, 3, 1, 9) == [3]


def test_curves_that_never_cross_rank_perfectly() -> None:
    trials, epochs = frames(parallel())
    rows = rungs.rung_rows(trials, epochs, FIFO)
    assert by_rung(rows, "rung_spearman") == {1: pytest.approx(1.0), 3: pytest.approx(1.0)}
    assert by_rung(rows, "rung_kendall") == {1: pytest.approx(1.0), 3: pytest.approx(1.0)}
    assert by_rung(rows, "rung_top_k_behind") == {1: 0.0, 3: 0.0}
    assert {r["budget_epochs"] for r in rows} == {9} and {
        r["n"] for r in rows if r["metric"] != "rung_top_k_behind"
    } == {12}
    assert all(r["verdict"] == "judges well" for r in rows)
    assert "judges poorly" not in rungs.rung_markdown(trials, epochs, FIFO)


def test_crossing_curves_give_the_sign_built_in() -> None:
    trials, epochs = frames(crossing(swap_after=3))  # epochs 1..3 reversed, 4..9 in final order
    rows = rungs.rung_rows(trials, epochs, FIFO)
    rho, tau = by_rung(rows, "rung_spearman"), by_rung(rows, "rung_kendall")
    assert rho[1] == pytest.approx(-1.0) and tau[1] == pytest.approx(-1.0)
    assert rho[3] == pytest.approx(-1.0)
    # Every one of the final top 3 was among the worst third at the rungs: all three behind the cut-off.
    assert by_rung(rows, "rung_top_k_behind") == {1: 3.0, 3: 3.0}
    warnings = [r["verdict"] for r in rows if r["metric"] == "rung_spearman"]
    assert all(w.startswith("The rung at epoch") and "judges poorly" in w for w in warnings)
    # Epoch 4 is the first that ranks like the end: the warning proposes it as the grace period.
    assert "--grace-period 4" not in warnings[0]  # 4 is not below max_t / rf = 3: no room for a later rung
    trials27, epochs27 = frames(crossing(epochs=27, swap_after=3), max_epochs=27)
    text = rungs.rung_markdown(trials27, epochs27, {**FIFO, "max_t": 27})
    assert "--grace-period 4" in text and "**poor**" in text


def test_partial_crossing_has_positive_but_weak_rank() -> None:
    """Half the field swaps places: a positive correlation below 1, and the warning at the threshold."""
    rng = np.random.default_rng(0)
    curves = parallel(n=20)
    for t in list(curves)[::2]:
        curves[t] = [curves[t][0] + rng.uniform(-0.2, 0.2)] + curves[t][1:]  # epoch 1 is noise for half of them
    trials, epochs = frames(curves)
    figures = {f["rung"]: f for f in rungs.rung_figures(trials, epochs, FIFO)}
    assert 0 < figures[1]["spearman"] < 1 and figures[3]["spearman"] == pytest.approx(1.0)
    assert (figures[1]["warning"] is not None) == rungs.poor(figures[1])
    assert figures[3]["warning"] is None


def test_losing_the_third_best_is_counted_not_warned() -> None:
    """Strong rank agreement, only the third-best final trial behind the cut-off: no warning."""
    curves = parallel(n=12)
    third = sorted(curves)[-3]
    curves[third] = [0.0] + curves[third][1:]  # last at epoch 1 only
    trials, epochs = frames(curves)
    first = rungs.rung_figures(trials, epochs, FIFO)[0]
    assert first["behind"] == 1 and first["behind_ids"] == [third] and not first["best_behind"]
    assert first["spearman"] > RHO_OK and first["warning"] is None


def test_warning_needs_enough_trials() -> None:
    trials, epochs = frames(crossing(n=4))  # reversed, but only 4 trials: figures, no verdict
    rows = rungs.rung_rows(trials, epochs, FIFO)
    assert by_rung(rows, "rung_spearman")[1] == pytest.approx(-1.0)
    assert all("judges poorly" not in r["verdict"] for r in rows)
    assert all(r["verdict"].startswith("too few") for r in rows)


def test_smoothed_metric_is_what_is_judged() -> None:
    """A one-epoch dip at the rung: the last epoch misjudges, the best-so-far does not."""
    curves = parallel(n=10, gap=0.06)  # a gap wider than an epoch's gain: the best so far keeps the order
    for i, t in enumerate(sorted(curves)[5:]):  # the five best dip far below the rest at epoch 3 only
        curves[t][2] = 0.01 * (i + 1)
    trials, epochs = frames(curves)
    last = {f["rung"]: f for f in rungs.rung_figures(trials, epochs, FIFO)}
    best = {f["rung"]: f for f in rungs.rung_figures(trials, epochs, {**FIFO, "stop_on": "best"})}
    assert last[3]["warning"] is not None and "--stop-on best" in last[3]["warning"]
    assert last[3]["best_behind"] and "stopped the winner" in last[3]["warning"]
    assert best[3]["warning"] is None and best[3]["spearman"] == pytest.approx(1.0)


def test_asha_survivors_final_epoch_falls_back_to_deepest_reached() -> None:
    """Under ASHA few trials reach the budget: compare with the deepest epoch MIN_PAIRS trials reached."""
    curves = parallel(n=12)
    curves = {t: (c if i >= 6 else c[:3]) for i, (t, c) in enumerate(curves.items())}  # 6 go on to 9
    curves = {t: (c if i >= 9 else c[: min(len(c), 3)]) for i, (t, c) in enumerate(curves.items())}
    trials, epochs = frames(curves)
    asha = {**FIFO, "kind": "asha"}
    figures = rungs.rung_figures(trials, epochs, asha)
    assert figures[0]["rung"] == 1 and figures[0]["final"] == 3  # only 3 trials reached 9 (< MIN_PAIRS)
    assert "survivors" in rungs.rung_markdown(trials, epochs, asha)


def test_settings_from_meta() -> None:
    assert rungs.settings_from_meta({"scheduler": "asha", "max_epochs": 30})["grace_period"] == 1  # legacy
    assert rungs.settings_from_meta({"scheduler": "fifo", "max_epochs": 30}) is None
    recorded = {
        "scheduler": "asha",
        "scheduler_settings": {
            "kind": "asha",
            "grace_period": 2,
            "reduction_factor": 3,
            "brackets": 3,
            "stop_on": "best",
            "max_t": 27,
        },
    }
    assert rungs.settings_from_meta(recorded)["brackets"] == 3
