"""The example plugin end to end, as a user runs it: a real Ray run of its own network and space, its
knobs as typed columns (null in BaseNet's rows), --resume reloading it, and the tables rebuilt by
`python -m analysis` without it."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

PROJECT = Path(__file__).resolve().parents[2]
PLUGIN = PROJECT / "examples" / "resnet_mini_plugin.py"


@pytest.mark.slow
def test_example_plugin_runs_end_to_end_and_its_knobs_are_columns(search, tmp_path):
    # Its two grid cells: the plugin's network and BaseNet, 2 epochs each.
    out = search(
        "--plugin",
        str(PLUGIN),
        "--space",
        "resnet_mini",
        "--search",
        "grid",
        "--max-epochs",
        "2",
        "--scheduler",
        "fifo",
        "--storage-path",
        str(tmp_path),
        "--name",
        "mini",
        "-q",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = pq.read_table(tmp_path / "mini" / "tables" / "trials.parquet")
    assert table.schema.field("res_blocks").type == pa.int64()
    assert table.schema.field("width_multiplier").type == pa.float64()
    trials = table.to_pandas().set_index("model")
    assert set(trials["status"]) == {"completed"} and trials["test_accuracy"].notna().all()
    assert (trials.loc["resnet_mini", "res_blocks"], trials.loc["resnet_mini", "width_multiplier"]) == (1, 0.5)
    assert trials.loc["basenet", ["res_blocks", "width_multiplier"]].isna().all()  # BaseNet reads neither

    # --resume without --plugin: the experiment reloads its plugin (its space would be unknown otherwise).
    resumed = search("--resume", "--name", "mini", "--storage-path", str(tmp_path), "-q")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # The analysis rebuilds the tables from experiment.json's declarations, without the plugin's code.
    (tmp_path / "mini" / "tables" / "trials.parquet").unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "analysis", str(tmp_path / "mini"), "--rebuild-tables"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    again = pq.read_table(tmp_path / "mini" / "tables" / "trials.parquet")
    assert again.schema.equals(table.schema, check_metadata=False)
    assert again.column("res_blocks").to_pylist() == table.column("res_blocks").to_pylist()
