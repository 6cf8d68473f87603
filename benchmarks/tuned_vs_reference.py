#!/usr/bin/env python
"""Does tuning beat the reference? The best confirmed configuration of a search against the best
reference cell of the same model, paired by seed.

    .venv/bin/python benchmarks/tuned_vs_reference.py --tuned results/basenet-tuned \
        --reference results/ref-basenet --model basenet

The tuned side is the `confirm` phase of `run_search.py --space basenet ... --confirm-top K --repeats R`
(each of the K best configurations retrained R times with seeds the search never used); its best
configuration is the one with the highest mean test accuracy. The reference side is the grid cell of
`--model` with the highest mean test accuracy in the reference experiment. Runs that share a seed share
the validation split and the initialisation seed, so the difference is paired by seed: mean, 95 %
t-interval and paired t-test over the seeds both sides ran.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from analysis import stats  # noqa: E402
from analysis.summary import config_ids, config_labels, varying_knobs  # noqa: E402

NAME = "tuned_vs_reference"


def best_config(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs of the configuration with the highest mean test accuracy, and its label."""
    runs = runs[runs["test_accuracy"].notna()].copy()
    runs["_cid"] = config_ids(runs).values
    runs["_label"] = config_labels(runs, varying_knobs(runs) or ["model"]).values
    means = runs.groupby("_cid")["test_accuracy"].mean()
    best = runs[runs["_cid"] == means.idxmax()]
    return best, str(best["_label"].iloc[0])


def compare(tuned: pd.DataFrame, reference: pd.DataFrame, model: str) -> pd.DataFrame:
    confirm = tuned[(tuned["phase"] == "confirm") & (tuned["status"] == "completed")]
    cells = reference[(reference["model"] == model) & (reference["status"] == "completed")]
    if confirm.empty or cells.empty:
        raise SystemExit(f"{NAME}: need completed confirm runs (tuned) and {model} cells (reference)")
    t_runs, t_label = best_config(confirm)
    r_runs, r_label = best_config(cells)
    t_by_seed = t_runs.groupby("seed")["test_accuracy"].mean()
    r_by_seed = r_runs.groupby("seed")["test_accuracy"].mean()
    seeds = sorted(set(t_by_seed.index) & set(r_by_seed.index))
    diff = stats.t_interval((t_by_seed[seeds] - r_by_seed[seeds]).to_numpy(), stats.DIFFERENCE)
    t_iv = stats.t_interval(t_by_seed.to_numpy(), stats.ACCURACY)
    r_iv = stats.t_interval(r_by_seed.to_numpy(), stats.ACCURACY)
    return pd.DataFrame(
        [
            {
                "model": model,
                "tuned_config": t_label,
                "tuned_seeds": " ".join(map(str, t_by_seed.index)),
                "tuned_test_accuracy": round(t_iv.mean, 4),
                "tuned_ci_low": round(t_iv.ci_low, 4),
                "tuned_ci_high": round(t_iv.ci_high, 4),
                "reference_cell": r_label,
                "reference_seeds": " ".join(map(str, r_by_seed.index)),
                "reference_test_accuracy": round(r_iv.mean, 4),
                "reference_ci_low": round(r_iv.ci_low, 4),
                "reference_ci_high": round(r_iv.ci_high, 4),
                "paired_seeds": " ".join(map(str, seeds)),
                "difference": round(diff.mean, 4),
                "diff_ci_low": round(diff.ci_low, 4),
                "diff_ci_high": round(diff.ci_high, 4),
                "p_value": round(diff.p_value, 4),
            }
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tuned", type=Path, required=True, help="experiment with a confirm phase")
    p.add_argument("--reference", type=Path, required=True, help="experiment holding the reference cells")
    p.add_argument("--model", default="basenet")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    frame = compare(_common.tables(args.tuned)[0], _common.tables(args.reference)[0], args.model)
    info = _common.machine()
    frame["date_utc"] = info["date_utc"]
    _common.emit(NAME, frame, args.out, f"tuned {args.model} vs the best reference {args.model} cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
