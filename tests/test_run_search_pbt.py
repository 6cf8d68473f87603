"""--scheduler pbt through a real Ray run on digits: a trial's learning rate changes mid-run, the epochs
table records the values in force, the report shows the schedule, and a worker killed mid-epoch still
resumes from its checkpoint. Then what PBT cannot be combined with, refused with the reason."""

import json
from pathlib import Path

import pytest

from tests import fault_plugin
from tests.search_runs import FAULT_PLUGIN, assert_one_row_per_trial_and_epoch, fault_env, reap, reports, start, tables

# Two BaseNet trials at once (two workers), four epochs, a perturbation every epoch: the weaker trial
# continues from the stronger one's checkpoint with its knobs perturbed at its first chance it gets.
PBT = (
    "--space",
    "basenet",
    "--dataset",
    "digits",
    "--scheduler",
    "pbt",
    "--search",
    "random",
    "--num-samples",
    "2",
    "--max-epochs",
    "4",
    "--perturbation-interval",
    "1",
)


@pytest.mark.slow
def test_pbt_changes_a_learning_rate_mid_run_records_it_and_survives_a_killed_worker(tmp_path: Path) -> None:
    plan, env = fault_env(tmp_path, [{"at": "mid_epoch", "epoch": 4}])
    log = tmp_path / "log"
    proc = start(*PBT, "--plugin", str(FAULT_PLUGIN), "--storage-path", str(tmp_path), "--name", "x", log=log, env=env)
    try:
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        reap(proc)
    exp = tmp_path / "x"
    trials, epochs = tables(exp)
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert_one_row_per_trial_and_epoch(trials, epochs)

    # Some trial's learning rate changed between two of its epochs, within the space's range.
    changed = epochs.groupby("trial_id")["set_learning_rate"].nunique()
    assert (changed > 1).any(), epochs[["trial_id", "epoch", "set_learning_rate"]]
    assert epochs["set_learning_rate"].between(1e-3, 0.3).all()
    record = json.loads((exp / "experiment.json").read_text())
    assert record["scheduler_settings"]["kind"] == "pbt" and record["optuna_study"] is None
    assert not (exp / "optuna.journal").exists()

    # The report prints the schedule of each trial whose knobs changed.
    report = (exp / "report" / "report.md").read_text()
    assert "## Knob schedules (population-based training)" in report
    for trial_id in changed[changed > 1].index:
        assert f"`{trial_id}` learning_rate:" in report

    # The worker killed mid-epoch 4: its trial went on from its epoch-3 checkpoint in another process, not
    # from scratch (which would report epochs 1-3 again; a PBT restart continues from a checkpoint too).
    (hit,) = fault_plugin.fired(plan)
    rows = reports(exp)[hit["trial_id"]]
    assert sorted(r["epoch"] for r in rows) == [1, 2, 3, 4], [(r["epoch"], r["pid"]) for r in rows]
    (last,) = [r for r in rows if r["epoch"] == 4]
    assert last["pid"] != hit["pid"] and last["iterations_since_restore"] == 1
