"""analysis.compare: two synthetic reference grids with known answers, one answer that holds and one
that flips; unsettled answers are open, not held; the table, markdown and figure are written; bad input
exits 2 with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic import trial_row, write_experiment

from analysis import compare, knobs, questions, summary, tables
from experiment import storage

PROJECT = Path(__file__).resolve().parents[2]
REFERENCE = {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32}
BN_QUESTION = "Where does BatchNorm belong on BaseNet?"
AUG_QUESTION = "Which augmentation helps the ConvNet?"


def reference_grid(
    basenet: dict[str, float], convnet: dict[str, float], seeds: int = 3, noise_seed: int = 0, run_noise: float = 0.0
) -> list[dict]:
    """Both questions' cells over `seeds` seeds; each level's effect is exact on every seed, plus
    `run_noise` (sd) of each run's own (then the paired differences vary from seed to seed)."""
    rng = np.random.default_rng(noise_seed)
    rows = []
    for seed in range(seeds):
        base = 0.30 + rng.normal(0, 0.02)  # seed noise shared by the paired cells
        for bn, effect in basenet.items():
            acc = float(np.clip(base + effect + rng.normal(0, run_noise), 0, 1)) if run_noise else base + effect
            rows.append(
                trial_row(
                    f"b{bn}{seed}",
                    seed=seed,
                    best_val=acc,
                    test=acc,
                    model="basenet",
                    bn_position=bn,
                    **REFERENCE,
                )
            )
        base = 0.50 + rng.normal(0, 0.02)
        for aug, effect in convnet.items():
            rows.append(
                trial_row(
                    f"c{aug}{seed}",
                    seed=seed,
                    best_val=base + effect,
                    test=base + effect,
                    model="convnet",
                    bn_position="after_relu",
                    augmentation=aug,
                    **REFERENCE,
                )
            )
    return rows


def write_summary(exp: Path) -> None:
    """Its report/summary.parquet as `python -m analysis EXP` writes it, less the kinds compare does not
    read (rankings, marginals, importance, figures: minutes on a loaded CI machine)."""
    rep = knobs.repeated_runs(tables.read_table(exp, "trials"))
    rows = questions.question_rows(rep) + summary.paired_rows(rep, knobs.varying_knobs(rep))
    fs, root = storage.resolve(exp)
    tables.write_table(
        pa.Table.from_pylist(rows, schema=summary.SUMMARY_SCHEMA), fs, storage.join(root, "report", "summary.parquet")
    )


@pytest.fixture
def two_experiments(tmp_path: Path) -> tuple[Path, Path]:
    # In both, BN after ReLU beats none by 6 points (the answer holds); whitening loses 4 points to
    # simple in the first and wins by 4 in the second (the answer flips); complex = simple in both.
    a = write_experiment(
        tmp_path / "cifar_0_24",
        reference_grid(
            {"none": 0.0, "before_relu": 0.0, "after_relu": 0.06}, {"simple": 0.0, "complex": 0.0, "whitening": -0.04}
        ),
    )
    b = write_experiment(
        tmp_path / "cifar_25_49",
        reference_grid(
            {"none": 0.0, "before_relu": 0.0, "after_relu": 0.06},
            {"simple": 0.0, "complex": 0.0, "whitening": 0.04},
            noise_seed=1,
        ),
    )
    for exp in (a, b):
        write_summary(exp)
    return a, b


def test_compare_says_which_answers_held_and_which_flipped(two_experiments: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_experiments
    assert compare.main([str(a), str(b)]) == 0
    out = tmp_path / "compare-cifar_0_24-vs-cifar_25_49"  # default: beside the first experiment
    table = pq.read_table(out / "compare.parquet")
    assert table.schema.field("held").metadata[b"doc"]
    df = table.to_pandas()
    q = df[df["kind"] == "question"]
    bn = q[(q["subject"] == BN_QUESTION) & (q["level"] == "after_relu") & (q["level_b"] == "none")]
    assert list(bn["experiment"]) == [str(a), str(b)] and list(bn["outcome"]) == ["A", "A"]
    assert set(bn["held"]) == {"held"} and bn["value"].to_numpy() == pytest.approx([0.06, 0.06])
    aug = q[(q["subject"] == AUG_QUESTION) & (q["level"] == "simple") & (q["level_b"] == "whitening")]
    assert list(aug["outcome"]) == ["A", "B"] and set(aug["held"]) == {"flipped"}
    assert aug["value"].to_numpy() == pytest.approx([0.04, -0.04])
    # Equal on every seed: no difference larger than the resolution, settled, in both: held.
    no_diff = q[(q["subject"] == BN_QUESTION) & (q["level"] == "before_relu") & (q["level_b"] == "none")]
    assert list(no_diff["outcome"]) == ["equivalent", "equivalent"] and set(no_diff["held"]) == {"held"}
    assert no_diff["equivalence_bound"].to_numpy() == pytest.approx([0.0, 0.0])
    # The paired rows (every knob, both metrics) are compared too.
    paired = df[
        (df["kind"] == "paired")
        & (df["knob"] == "augmentation")
        & (df["level"] == "simple")
        & (df["level_b"] == "whitening")
        & (df["metric"] == "test_accuracy")
    ]
    assert set(paired["held"]) == {"flipped"}

    md = (out / "compare.md").read_text()
    assert (
        f"| {BN_QUESTION} | after_relu - none | 6.0 [6.0, 6.0], n=3: after_relu wins | "
        "6.0 [6.0, 6.0], n=3: after_relu wins | **held** |" in md
    )
    assert f"| {AUG_QUESTION} | simple - whitening |" in md and "whitening wins | **flipped** |" in md
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_levels_listed_the_other_way_round_are_aligned() -> None:
    rows = pd.DataFrame(
        [
            {
                "kind": "paired",
                "subject": "optimizer",
                "knob": "optimizer",
                "metric": "test_accuracy",
                "level": "adam",
                "level_b": "sgd",
                "experiment": "x",
                "n": 3,
                "value": 0.05,
                "ci_low": 0.01,
                "ci_high": 0.09,
                "p_holm": 0.01,
                "outcome": "A",
                "verdict": "",
            },
            {
                "kind": "paired",
                "subject": "optimizer",
                "knob": "optimizer",
                "metric": "test_accuracy",
                "level": "sgd",
                "level_b": "adam",
                "experiment": "y",
                "n": 3,
                "value": -0.03,
                "ci_low": -0.05,
                "ci_high": -0.01,
                "p_holm": 0.02,
                "outcome": "B",
                "verdict": "",
            },
        ]
    )
    aligned = compare._align(rows)
    assert list(aligned["level"]) == ["adam", "adam"] and list(aligned["outcome"]) == ["A", "A"]
    assert aligned.loc[1, ["value", "ci_low", "ci_high"]].tolist() == pytest.approx([0.03, 0.01, 0.05])
    assert compare.held(["A", "A"]) == "held" and compare.held(["A", "equivalent"]) == "differs"
    assert compare.held(["equivalent", "equivalent"]) == "held"
    assert compare.held(["open", "open"]) == "open" and compare.held(["A", "open"]) == "open"
    assert compare.held(["A", "B", "open"]) == "flipped"  # opposite winners say more than a third's doubt
    assert compare.held(["A"]) == "only one"


def test_two_experiments_with_unsettled_answers_are_open_not_held(tmp_path: Path) -> None:
    """The digits case of issue 20: both BN intervals span tens of points, both reports say "no difference
    detected"; that is open in each, so the answer is open, not held. Read both from the summaries as
    written now (with `outcome`) and as schema 2 wrote them (without): open either way."""
    noisy = {"none": 0.0, "before_relu": 0.0, "after_relu": 0.0}
    exps = [
        write_experiment(tmp_path / f"digits_{i}", reference_grid(noisy, {}, noise_seed=i, run_noise=0.15))
        for i in (1, 2)
    ]
    for exp in exps:
        write_summary(exp)
    df = compare.compare_table([str(e) for e in exps])
    q = df[df["subject"] == BN_QUESTION]
    assert len(q) == 6 and set(q["outcome"]) == {"open"} and set(q["held"]) == {"open"}, q[["outcome", "ci_low"]]
    assert (q["ci_high"] - q["ci_low"] > 0.1).all()  # wide: nothing to hold
    assert (q["equivalence_bound"] > 0.05).all() and q["mdd"].notna().all()
    for exp in exps:  # schema 2: no outcome column; "no difference detected" is not a settled verdict
        path = exp / "report" / "summary.parquet"
        old = pq.read_table(path).drop_columns(["outcome", "equivalence_bound", "mdd"])
        pq.write_table(old, path)
    again = compare.compare_table([str(e) for e in exps])
    assert set(again[again["subject"] == BN_QUESTION]["held"]) == {"open"}
    md = compare.markdown(df, [str(e) for e in exps])
    assert "**open**" in md and "0 held" in md


def test_out_flag_and_a_third_experiment_missing_a_question(two_experiments: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_experiments
    basenet_only = write_experiment(
        tmp_path / "basenet_only", [r for r in reference_grid({"none": 0.0, "after_relu": -0.05}, {}, noise_seed=2)]
    )
    write_summary(basenet_only)
    out = tmp_path / "mine"
    assert compare.main([str(a), str(b), str(basenet_only), "--out", str(out)]) == 0
    df = pd.read_parquet(out / "compare.parquet")
    bn = df[(df["subject"] == BN_QUESTION) & (df["level"] == "after_relu") & (df["level_b"] == "none")]
    assert list(bn["outcome"]) == ["A", "A", "B"] and set(bn["held"]) == {"flipped"}
    whitening = df[(df["subject"] == AUG_QUESTION) & (df["level_b"] == "whitening")]
    assert str(basenet_only) not in set(whitening["experiment"])  # it has no ConvNet cells
    assert "| absent |" in (out / "compare.md").read_text()


def test_bad_input_exits_2_with_one_line(two_experiments: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two_experiments
    no_report = write_experiment(tmp_path / "no_report", [])
    # Through `python -m analysis compare` (the subcommand), in a clean process: and without Ray or TF.
    code = (
        f"import sys, runpy; sys.argv = ['analysis', 'compare', {str(a)!r}, {str(no_report)!r}]\n"
        "try:\n    runpy.run_module('analysis', run_name='__main__')\nexcept SystemExit as e:\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'tensorflow', 'keras'))\n"
        "    print('exit', e.code, heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=180)
    assert proc.stdout.strip() == "exit 2 []", proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"python -m analysis compare: error: {no_report}: no report/summary.parquet; write it first with "
        f"`python -m analysis {no_report}`"
    ]
    for argv, needle in (
        ([str(a)], "two or more"),
        ([str(a), str(tmp_path / "nope")], "no such experiment"),
        ([str(a), str(a)], "named twice"),
    ):
        with pytest.raises(compare.BadInput, match=needle):
            compare.write_comparison(argv)
