"""--mlflow-uri: a real MLflow tracking server on loopback receives one run per trial, read back with
MLflow's own client; without the flag nothing is logged."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import free_port, run_search, wait_for_server

DIGITS = ("--space", "basenet", "--dataset", "digits", "--max-epochs", "2", "--scheduler", "fifo")


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """The URI of a fresh MLflow tracking server on loopback (a SQLite store in tmp_path)."""
    port = free_port()
    log = open(tmp_path / "mlflow.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(server, port, tmp_path / "mlflow.log", timeout=180, poll=1)  # it imports a lot
        yield uri
    finally:
        # Killed, not stopped: the test has read what it needs, and a graceful stop took 7-13 s here.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_every_trial_is_an_mlflow_run_with_its_knobs_and_epoch_metrics(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    out = run_search(
        *DIGITS, "--num-samples", "2", "--mlflow-uri", mlflow_server, "--storage-path", str(tmp_path), "--name", "x"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "x" / "tables" / "trials.parquet")
    epochs = pd.read_parquet(tmp_path / "x" / "tables" / "epochs.parquet")

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("x")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(trials) == 2
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert set(by_trial) == set(trials["trial_id"])
    for row in trials.itertuples():
        run = by_trial[row.trial_id]
        assert run.data.tags["experiment"] == "x" and run.data.tags["phase"] == "search"
        assert run.info.status == "FINISHED"
        # Params are the trial's knobs, as Tune recorded its config.
        assert float(run.data.params["learning_rate"]) == pytest.approx(row.learning_rate)
        assert run.data.params["optimizer"] == row.optimizer and int(run.data.params["batch_size"]) == row.batch_size
        # One point per epoch, at step = epoch, the epochs table's values.
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        mine = epochs[epochs["trial_id"] == row.trial_id].sort_values("epoch")
        assert [m.step for m in history] == list(mine["epoch"])
        assert [m.value for m in history] == pytest.approx(list(mine["val_accuracy"]))


def test_without_the_flag_no_mlflow_logger_is_built() -> None:
    from driver import Request
    from driver.phases import loggers as run_loggers
    from experiment.folder import locate
    from tuning.mlflow_logging import TrialRunsLogger

    exp = locate("/tmp", "x")
    assert not any(isinstance(c, TrialRunsLogger) for c in run_loggers(Request(space="basenet"), exp, "search"))
    with_flag = run_loggers(Request(space="basenet", mlflow_uri="sqlite:///m.db"), exp, "search-2")
    logger = next(c for c in with_flag if isinstance(c, TrialRunsLogger))
    assert logger.tags == {"experiment": "x", "phase": "search"} and logger.experiment_name == "x"
