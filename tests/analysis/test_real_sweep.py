"""End to end: a real (tiny) batch-norm sweep on digits through run_search.py, then its report,
DuckDB on its tables, the notebook, and --rebuild-tables from its trial folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from analysis import summary
from tests.analysis.notebook_runner import run_notebook

PROJECT = Path(__file__).resolve().parents[2]
FIGURES = ("learning_curves.png", "best_configs.png", "knob_effects.png", "asha_rungs.png", "parallel_coordinates.png")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_real_sweep_gets_a_report_duckdb_and_a_notebook(tmp_path: Path, search, monkeypatch) -> None:
    proc = search(
        "--space",
        "batchnorm",
        "--dataset",
        "digits",
        "--num-samples",
        "4",
        "--max-epochs",
        "2",
        "--max-concurrent",
        "2",
        "--storage-path",
        str(tmp_path),
        "--name",
        "sweep",
        "-q",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "sweep"
    assert "warning: report not written" not in proc.stderr
    assert f"report: {exp}/report/report.md" in proc.stdout

    # run_search.py wrote the report at its end: figures of sensible size, a documented summary.
    folder = exp / "report"
    for name in FIGURES:
        size = (folder / name).stat().st_size
        assert 5_000 < size < 2_000_000, (name, size)
    table = pq.read_table(folder / "summary.parquet")
    assert table.schema.names == [n for n, _, _ in summary.SUMMARY_COLUMNS]
    assert all(f.metadata and f.metadata[b"doc"] for f in table.schema)
    ranking = table.to_pandas().query("kind == 'ranking'").sort_values("rank")
    assert len(ranking) >= 1
    assert ranking["budget_epochs"].is_monotonic_decreasing  # matched budget: longer runs first
    assert "## Ranking at matched budget" in (folder / "report.md").read_text()

    # The contract of docs/design.md ("The tables"): DuckDB straight on the file.
    query = f"select bn_position, avg(test_accuracy) from '{exp}/tables/trials.parquet' group by 1"
    rows = duckdb.sql(query).fetchall()
    assert rows and {r[0] for r in rows} <= {"none", "before_relu", "after_relu"}

    run_notebook(exp, monkeypatch)  # raises on the first failing cell

    # --rebuild-tables: tables and report come back from the trial folders alone.
    trials_before = pq.read_table(exp / "tables" / "trials.parquet").num_rows
    shutil.rmtree(exp / "tables")
    shutil.rmtree(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", str(exp), "--rebuild-tables"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(exp / "tables" / "trials.parquet").num_rows == trials_before == 4
    assert (folder / "report.md").exists() and (folder / "summary.parquet").exists()
