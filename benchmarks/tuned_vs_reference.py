#!/usr/bin/env python
"""Does tuning beat the reference? The best confirmed configuration of a search against the best
reference cell of the same model, paired by seed.

    .venv/bin/python benchmarks/tuned_vs_reference.py --tuned results/basenet-tuned \
        --reference results/ref-basenet --model basenet

The comparison itself is analysis.against (see there): the best confirmed configuration against the
best reference cell of `--model`, paired by seed. This script appends it to
benchmarks/results/tuned_vs_reference.csv with the date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

from analysis import against

NAME = "tuned_vs_reference"


def compare(tuned: pd.DataFrame, reference: pd.DataFrame, model: str) -> pd.DataFrame:
    """analysis.against's comparison (what `python -m analysis EXP --against REF` reports) as one row,
    rounded for the CSV."""
    result = against.compare(tuned[tuned["model"] == model], reference)
    if result is None or result.reference is None:
        raise SystemExit(f"{NAME}: need completed confirm runs (tuned) and {model} cells (reference)")
    return pd.DataFrame([result.row()]).round(4)


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
    # Each run adds its comparison to the ones before (a history of what tuning bought), never replaces them.
    path = Path(args.out) if args.out else _common.RESULTS / f"{NAME}.csv"
    if path.is_file():
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
    _common.emit(NAME, frame, path, f"tuned {args.model} vs the best reference {args.model} cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
