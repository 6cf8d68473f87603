#!/usr/bin/env python
"""Write a curve set (tuning.replay) from finished experiments: every trial that ran its full budget.

    .venv/bin/python benchmarks/record_curves.py benchmarks/results/curves_digits_basenet.parquet results/EXP ...

The experiments' tables are rebuilt from their trial folders first (analysis.tables), so a folder
whose run was cut short still gives its finished trials.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the curve set to write (.parquet)")
    p.add_argument("experiments", nargs="+", type=Path, help="experiment folders (<storage-path>/<name>)")
    p.add_argument("--phase", choices=("search", "confirm"), default=None, help="only this phase's trials")
    args = p.parse_args(argv)
    from analysis.tables import build_tables, write_table
    from experiment import storage
    from tuning.replay import configs_of, record_curves

    for exp in args.experiments:
        if not (exp / "experiment.json").is_file():
            print(f"record_curves.py: error: {exp} is not an experiment folder (no experiment.json)", file=sys.stderr)
            return 2
    staged = []
    for exp in args.experiments:  # rebuilt into a scratch copy of the tables: the experiment is left as it is
        trials, epochs = build_tables(exp)
        scratch = Path(tempfile.mkdtemp(prefix="curves-")) / exp.name
        fs, root = storage.resolve(scratch)
        write_table(trials, fs, storage.join(root, "tables", "trials.parquet"))
        write_table(epochs, fs, storage.join(root, "tables", "epochs.parquet"))
        staged.append(scratch)
    curves = record_curves(staged, phase=args.phase)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    curves.to_parquet(args.out, index=False, compression="zstd")
    configs = configs_of(curves)
    print(
        f"{len(configs)} configurations x up to {int(curves['epoch'].max())} epochs "
        f"({len(curves)} rows, {args.out.stat().st_size / 1024:.0f} KiB) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
