"""A search's best confirmed configuration against the best reference cell of its model, paired by
seed: analysis.against, and the report's first lines with `--against`."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from synthetic import trial_row, write_experiment

from analysis import against, report, tables

SEED_NOISE = {0: 0.00, 1: 0.01, 2: -0.02, 3: 0.03, 4: 0.0}  # shared by both sides: it cancels when paired


def reference_rows() -> list[dict]:
    return [
        trial_row(f"r{bn}{s}", seed=s, model="basenet", bn_position=bn, test=0.40 + lift + SEED_NOISE[s])
        for s in range(5)
        for bn, lift in (("none", 0.0), ("after_relu", 0.02))
    ]


def tuned_rows(lifts: dict[float, list[float]]) -> list[dict]:
    """A search over learning_rate and lr_schedule, then its confirm phase: lr -> lift per seed 1, 2, 3."""
    search = [
        trial_row(f"s{i}", seed=0, model="basenet", learning_rate=lr, lr_schedule=sched, best_val=0.5 + i / 100)
        for i, (lr, sched) in enumerate([(0.1, "cosine"), (0.03, "cosine"), (0.01, "constant")])
    ]
    confirm = [
        trial_row(
            f"c{lr}-{s}",
            phase="confirm",
            seed=s,
            model="basenet",
            learning_rate=lr,
            lr_schedule="cosine",
            test=0.40 + lift + SEED_NOISE[s],
        )
        for lr, per_seed in lifts.items()
        for s, lift in zip((1, 2, 3), per_seed, strict=True)
    ]
    return search + confirm


def frame(rows: list[dict]) -> pd.DataFrame:
    return pa.Table.from_pylist(rows, schema=tables.TRIALS_SCHEMA).to_pandas()


def test_the_best_confirmed_config_beats_the_best_reference_cell_by_the_paired_difference():
    result = against.compare(frame(tuned_rows({0.1: [0.12, 0.10, 0.11], 0.03: [0.05] * 3})), frame(reference_rows()))
    assert result is not None and result.reference is not None
    assert "learning_rate=0.1" in result.tuned.label and "lr_schedule=cosine" in result.tuned.label
    assert result.reference.label == "bn_position=after_relu"  # the better of the two cells
    assert result.seeds == (1, 2, 3)  # the reference's seeds 0 and 4 have no tuned partner
    # Paired: (0.12, 0.10, 0.11) - 0.02 per seed = 0.10, 0.08, 0.09; the seed noise cancels.
    assert result.difference.mean == pytest.approx(0.09)
    assert result.difference.ci_low > 0.05 and result.difference.ci_high < 0.13
    lines = result.lines()
    assert lines[0].startswith("**Best confirmed configuration** (basenet): ")
    assert "beats it by 9.0 points" in lines[1] and "seeds 1, 2, 3" in lines[1]


def test_a_difference_within_noise_is_reported_as_none_detected():
    result = against.compare(frame(tuned_rows({0.1: [0.05, -0.02, 0.04]})), frame(reference_rows()))
    assert result is not None and not result.difference.excludes_zero
    assert "no difference detected" in result.lines()[1]


def test_no_confirm_phase_means_no_comparison_and_no_shared_seed_says_what_to_run():
    search_only = [r for r in tuned_rows({0.1: [0.1] * 3}) if r["phase"] == "search"]
    assert against.compare(frame(search_only), frame(reference_rows())) is None
    seeds_0_only = frame([r for r in reference_rows() if r["seed"] == 0])
    result = against.compare(frame(tuned_rows({0.1: [0.1] * 3})), seeds_0_only)
    assert result.seeds == () and "run the reference cell at the confirm seeds" in result.lines()[1]


def test_report_states_the_comparison_first_and_writes_it_as_a_table(tmp_path, capsys):
    tuned = write_experiment(tmp_path / "tuned", tuned_rows({0.1: [0.12, 0.10, 0.11], 0.03: [0.05] * 3}))
    ref = write_experiment(tmp_path / "ref", reference_rows())
    assert report.main([str(tuned), "--against", str(ref)]) == 0
    md = (tuned / "report" / "report.md").read_text().splitlines()
    body = [line for line in md if line.strip()]
    assert body[2].startswith("**Best confirmed configuration** (basenet): learning_rate=0.1")
    assert body[3].startswith("**Against the best reference basenet cell** (bn_position=after_relu")
    row = pd.read_parquet(tuned / "report" / "against.parquet").iloc[0]
    assert row["difference"] == pytest.approx(0.09) and row["paired_seeds"] == "1 2 3"
    assert "beats it by 9.0 points" in capsys.readouterr().out
    # Without --against the report names the best confirmed configuration and drops the stale table.
    assert report.main([str(tuned)]) == 0
    assert not (tuned / "report" / "against.parquet").exists()
    assert "**Against" not in (tuned / "report" / "report.md").read_text()


def test_a_missing_reference_folder_is_one_line_exit_2(tmp_path, capsys):
    tuned = write_experiment(tmp_path / "tuned", tuned_rows({0.1: [0.1] * 3}))
    assert report.main([str(tuned), "--against", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
