"""`python -m analysis`: the report files, bad input, and what it must never import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from synthetic import bn_study_rows, write_experiment

from analysis import report, summary

PROJECT = Path(__file__).resolve().parents[2]
FIGURES_ALWAYS = (
    "learning_curves.png",
    "best_configs.png",
    "knob_effects.png",
    "asha_rungs.png",
    "parallel_coordinates.png",
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args], cwd=PROJECT, capture_output=True, text=True, timeout=180
    )


def assert_report(folder: Path) -> None:
    for name in FIGURES_ALWAYS:
        size = (folder / name).stat().st_size
        assert 5_000 < size < 2_000_000, (name, size)
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pq.read_table(folder / "summary.parquet")
    assert table.schema.equals(summary.SUMMARY_SCHEMA, check_metadata=True)
    assert all(f.metadata[b"doc"] for f in table.schema)
    md = (folder / "report.md").read_text()
    for name in FIGURES_ALWAYS:
        assert f"]({name})" in md


def test_cli_writes_summary_markdown_and_figures(bn_experiment: Path) -> None:
    proc = run_cli(str(bn_experiment))
    assert proc.returncode == 0, proc.stderr
    assert "after_relu beats before_relu by 5.0 points" in proc.stdout
    folder = bn_experiment / "report"
    assert_report(folder)
    assert 5_000 < (folder / "paired_differences.png").stat().st_size < 2_000_000
    md = (folder / "report.md").read_text()
    assert "bn_position: after_relu beats before_relu by 5.0 points of test_accuracy, 95 % CI 5.0 to 5.0" in md
    assert "no difference larger than 1.0 points in test_accuracy: within +-0.0 points" in md  # none = before_relu
    assert "fANOVA (Optuna) over 12 search trials" in md
    kinds = set(pq.read_table(folder / "summary.parquet").column("kind").to_pylist())
    # A ConvNet BN study: neither reference question; no scheduler settings in its experiment.json: no rungs.
    assert kinds == set(summary.KINDS) - {"question", "question_epoch", "rung"}


def test_a_file_uri_goes_through_pyarrow_fs(bn_experiment: Path) -> None:
    assert report.main([bn_experiment.as_uri()]) == 0
    assert (bn_experiment / "report" / "summary.parquet").exists()


def test_a_figure_that_no_longer_applies_is_removed(tmp_path: Path) -> None:
    rows = bn_study_rows()
    root = write_experiment(tmp_path / "e", rows)
    assert report.main([str(root)]) == 0
    assert (root / "report" / "paired_differences.png").exists()
    write_experiment(root, [r for r in rows if r["phase"] == "search"])  # no repeated runs any more
    assert report.main([str(root)]) == 0
    assert not (root / "report" / "paired_differences.png").exists()


@pytest.mark.parametrize("case", ["missing", "no_tables", "corrupt", "rebuild_not_experiment"])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "exp"
    args = [str(target)]
    if case != "missing":
        target.mkdir()
    if case == "corrupt":
        (target / "tables").mkdir()
        (target / "tables" / "trials.parquet").write_text("not parquet")
        (target / "tables" / "epochs.parquet").write_text("not parquet")
    if case == "rebuild_not_experiment":
        args.append("--rebuild-tables")
    if case == "missing":  # one case as a real process: exit status and stderr as a user sees them
        proc = run_cli(*args)
        code, stderr = proc.returncode, proc.stderr
    else:
        code, stderr = report.main(args), capsys.readouterr().err
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m analysis: error:") and str(target) in lines[0]
    if case in ("no_tables", "corrupt"):
        assert "--rebuild-tables" in lines[0]


def test_rebuild_tables_reads_the_trial_folders(tmp_path: Path) -> None:
    """Trial folders as Ray Tune leaves them (params.json, result.json); no tables yet."""
    root = tmp_path / "exp"
    (root / "search").mkdir(parents=True)
    (root / "experiment.json").write_text(json.dumps({"experiment": "exp", "space": "batchnorm", "max_epochs": 2}))
    for i, (bn, acc) in enumerate([("none", 0.5), ("after_relu", 0.7), ("before_relu", 0.6)]):
        trial = root / "search" / f"t{i}"
        trial.mkdir()
        (trial / "params.json").write_text(
            json.dumps({"bn_position": bn, "learning_rate": 0.01, "dataset": "digits", "max_epochs": 2, "seed": 0})
        )
        lines = [
            {
                "trial_id": f"t{i}",
                "epoch": e,
                "loss": 1.0 / e,
                "accuracy": acc,
                "val_loss": 1.0 / e,
                "val_accuracy": acc - 0.1 * (2 - e),
                "learning_rate": 0.01,
                "epoch_time_s": 1.0,
                "timestamp": 1_700_000_000 + e,
                "time_this_iter_s": 1.0,
                "time_total_s": float(e),
                **({"test_accuracy": acc} if e == 2 else {}),
            }
            for e in (1, 2)
        ]
        (trial / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert report.main([str(root)]) == 2  # no tables yet
    assert report.main([str(root), "--rebuild-tables"]) == 0
    assert pq.read_table(root / "tables" / "trials.parquet").num_rows == 3
    ranked = pq.read_table(root / "report" / "summary.parquet").to_pandas().query("kind == 'ranking'")
    assert ranked.sort_values("rank")["trial_id"].tolist() == ["t1", "t2", "t0"]


def test_analysis_imports_neither_ray_nor_tensorflow(bn_experiment: Path) -> None:
    code = f"""
import sys
import analysis, analysis.__main__, analysis.report, analysis.summary, analysis.importance, analysis.plots
assert analysis.report.main([{str(bn_experiment)!r}]) == 0
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'tensorflow', 'keras'))
assert not heavy, heavy
print('clean')
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_empty_and_all_failed_experiments_still_get_a_report(tmp_path: Path) -> None:
    from synthetic import trial_row

    failed = {
        **trial_row("e1", bn_position="none"),
        "status": "error",
        "error": "NaN loss",
        "best_val_accuracy": None,
        "test_accuracy": None,
        "epochs_completed": 0,
    }
    for name, rows in (("empty", []), ("failed", [failed])):
        root = write_experiment(tmp_path / name, rows)
        assert report.main([str(root)]) == 0
        md = (root / "report" / "report.md").read_text()
        assert "No repeated runs" in md and "importance skipped" in md
    assert "NaN loss" in (tmp_path / "failed" / "report" / "report.md").read_text()
