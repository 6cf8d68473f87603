#!/usr/bin/env python
"""What the atomic snapshot upload costs (tuning/atomic_storage.py): Tune's upload of its driver staging
folder (`_upload_to_fs_path`, one copy_files, every file written in place) and `upload_atomically` (the trial
folders in one copy_files through a folder of links to them, then each state file under a temporary name,
renamed), timed side by side in one run.

    .venv/bin/python benchmarks/atomic_storage.py               # a 1,000-trial driver folder, 5 rounds
    .venv/bin/python benchmarks/atomic_storage.py --quick       # 20 trials, 2 rounds (a smoke run)

The staging folder is shaped like an N-trial experiment's (per trial a result.json of 3 epochs and a
params.json; the experiment state, about 5 KB per trial; the searcher's). The two uploads alternate round
by round so that a drift of the machine hits both alike; each round replaces a copy the previous upload
left, and finds the links the previous one made (as every snapshot after the first does; the first makes a
link per trial, ~50 us each here). The figure is the median of the rounds and the ratio
atomic / Tune's. Target: at most 1.5x (the upload runs in Tune's background thread, and tuning.snapshots
keeps the snapshots within a share of the driver's time either way).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "atomic_storage"
TARGET_RATIO = 1.5  # atomic / Tune's upload


def staging_folder(root: Path, trials: int) -> Path:
    """A driver staging folder shaped like an N-trial experiment's."""
    root.mkdir(parents=True)
    epoch = {"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.2, "accuracy": 0.6, "loss": 1.1, "time_this_iter_s": 2}
    for i in range(trials):
        trial = root / f"trial{i:05d}"
        trial.mkdir()
        (trial / "result.json").write_text("".join(json.dumps({**epoch, "epoch": e}) + "\n" for e in (1, 2, 3)))
        (trial / "params.json").write_text(json.dumps({"learning_rate": 0.01, "bn_position": "before_relu"}))
    (root / "experiment_state-2026-12-04_10-00-00.json").write_bytes(b"x" * 5000 * trials)
    (root / "search_gen_state-2026-12-04_10-00-00.json").write_bytes(b"x" * 2000)
    (root / "searcher-state-2026-12-04_10-00-00.pkl").write_bytes(b"x" * 300 * trials)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20 trials, 2 rounds (a smoke run)")
    p.add_argument("--trials", type=int, default=None, help="trials of the staged experiment (default 1000)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of each upload (default 5)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default /tmp/keras-hpo-bench)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.trials = args.trials or (20 if args.quick else 1000)
    args.rounds = args.rounds or (2 if args.quick else 5)

    from ray.train._internal.storage import _upload_to_fs_path

    from tuning.atomic_storage import PARTIAL_SUFFIX, upload_atomically

    work = _common.scratch(NAME, args.workdir)
    staging = staging_folder(work / "staging", args.trials)
    fs = pafs.LocalFileSystem()
    uploads = {"tune": _upload_to_fs_path, "atomic": upload_atomically}
    seconds: dict[str, list[float]] = {name: [] for name in uploads}
    for r in range(args.rounds):
        for name, upload in uploads.items():
            dest = work / f"storage-{name}"
            if r == 0:
                upload(str(staging), fs, str(dest))  # the first snapshot; the timed ones replace its files
            start = time.perf_counter()
            upload(str(staging), fs, str(dest))
            seconds[name].append(time.perf_counter() - start)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    partial_left = len(list(work.rglob(f"*{PARTIAL_SUFFIX}")))  # every atomic write renamed
    same = all(
        (work / "storage-atomic" / f.relative_to(staging)).read_bytes() == f.read_bytes()
        for f in staging.rglob("*")
        if f.is_file()
    )
    tune, atomic = statistics.median(seconds["tune"]), statistics.median(seconds["atomic"])
    row = {
        "trials": args.trials,
        "files": sum(1 for f in staging.rglob("*") if f.is_file()),
        "tune_ms": round(1000 * tune, 1),
        "atomic_ms": round(1000 * atomic, 1),
        "ratio": round(atomic / tune, 2),
        "target_ratio": TARGET_RATIO,
        "met": atomic / tune <= TARGET_RATIO,
        "same_files": same,
        "partial_files_left": partial_left,
        "rounds": args.rounds,
        **_common.machine(),
    }
    shutil.rmtree(work, ignore_errors=True)
    _common.emit(NAME, pd.DataFrame([row]), args.out, "the snapshot upload, Tune's vs atomic (median of the rounds)")


if __name__ == "__main__":
    main()
