"""A sweep whose storage is an S3 bucket: a real S3-compatible server (moto) on loopback.

Results, checkpoints, tables and the report land in the bucket through pyarrow.fs (ours and Ray
Tune's); `--s3-endpoint` reaches the driver, Ray Tune and the trial workers; `python -m analysis`
reads the experiment back from the bucket.
"""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from analysis.tables import read_table
from experiment import lock
from tests.conftest import BUCKET, free_port

PROJECT = Path(__file__).resolve().parents[1]
PREFIX, NAME = "sweeps", "s3run"
NUM_SAMPLES, EPOCHS = 2, 2
# Distinctive secrets in the driver's environment: neither may reach any file of the experiment.
AWS_SECRET = "issue14AwsSecretNeverInResults0123456789"
RAY_TOKEN = "3f9c2a7e1b4d8f60a5c7e9b2d4f6a8c0e1f3a5b7c9d2e4f6a8b0c2d4e6f8a1b3"  # 64 hex, as Ray makes one


def readable_bytes(path: str, data: bytes) -> bytes:
    """A file's bytes, plus what compression hides from a byte search: the members of a zip (a .keras
    checkpoint), the values and metadata of a Parquet table."""
    parts = [data]
    if data.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            parts += [z.read(name) for name in z.namelist()]
    if path.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        parts += [repr(table.to_pylist()).encode(), repr(table.schema.metadata).encode()]
        parts += [repr(f.metadata).encode() for f in table.schema]
    return b"\n".join(parts)


def files_under(fs: pafs.FileSystem, path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path[len(path) + 1 :] for i in infos if i.type == pafs.FileType.File)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_to_an_s3_bucket_and_analysis_reads_it_back(s3_server, tmp_path, monkeypatch):
    endpoint, env, fs = s3_server
    uri = f"s3://{BUCKET}/{PREFIX}"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "run_search.py"),
            "--space",
            "batchnorm",
            "--dataset",
            "digits",
            "--num-samples",
            str(NUM_SAMPLES),
            "--max-epochs",
            str(EPOCHS),
            "--scheduler",
            "fifo",
            "--storage-path",
            uri,
            "--s3-endpoint",
            endpoint,
            "--name",
            NAME,
            "-q",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=800,
        env={**env, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "RAY_AUTH_TOKEN": RAY_TOKEN},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{uri}/{NAME}/tables" in proc.stdout

    experiment = f"{BUCKET}/{PREFIX}/{NAME}"
    stored = files_under(fs, experiment)
    assert "experiment.json" in stored
    assert {"tables/trials.parquet", "tables/epochs.parquet"} <= set(stored)
    # Ray Tune's own results and each trial's checkpoints went to the bucket too: the trial
    # workers reached the endpoint, not only the driver.
    assert sum(p.startswith("search/") and p.endswith("/result.json") for p in stored) == NUM_SAMPLES
    checkpoints = {p.split("/")[1] for p in stored if p.startswith("search/") and "/checkpoint_" in p}
    assert len(checkpoints) == NUM_SAMPLES
    # Every table and json was written to a temp name, then renamed: none is left half-way.
    assert [p for p in stored if p.endswith(".tmp")] == []
    # The Optuna study: a journal on the driver's disk (a journal needs a local file system), copied to
    # the experiment folder when the search ended; both hold every trial, COMPLETE under FIFO.
    assert "optuna.journal" in stored
    local = proc.stdout.split("watch it live with: optuna-dashboard ", 1)[1].split()[0]
    copy = tmp_path / "optuna.journal"
    with fs.open_input_stream(f"{experiment}/optuna.journal") as f:
        copy.write_bytes(f.read())
    assert copy.read_bytes() == Path(local).read_bytes()
    study = optuna.load_study(study_name=NAME, storage=JournalStorage(JournalFileBackend(str(copy))))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * NUM_SAMPLES

    # `python -m analysis` reads the experiment from the bucket and writes its report there.
    fs.delete_dir_contents(f"{experiment}/report", missing_dir_ok=True)
    report = subprocess.run(
        [sys.executable, "-m", "analysis", f"{uri}/{NAME}"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "AWS_ENDPOINT_URL": endpoint},
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    assert {"report/report.md", "report/summary.parquet"} <= set(files_under(fs, experiment))

    # The tables read back from the bucket are complete.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    trials = read_table(f"{uri}/{NAME}", "trials")
    epochs = read_table(f"{uri}/{NAME}", "epochs")
    assert len(trials) == NUM_SAMPLES
    assert set(trials["status"]) == {"completed"}
    assert trials["test_accuracy"].notna().all()
    assert len(epochs) == NUM_SAMPLES * EPOCHS
    assert (trials["experiment"] == NAME).all()

    # No file of the experiment (experiment.json, tables, report, Tune's state, trial folders, checkpoints)
    # holds the secret key or the Ray token the driver ran with.
    stored = files_under(fs, experiment)
    assert {"experiment.json", "tables/trials.parquet", "report/report.md"} <= set(stored)
    assert any(p.startswith("search/") and p.endswith("params.json") for p in stored)
    leaks = [
        (p, secret)
        for p in stored
        for secret in (AWS_SECRET, RAY_TOKEN)
        if secret.encode() in readable_bytes(p, fs.open_input_stream(f"{experiment}/{p}").read())
    ]
    assert leaks == []
    assert "driver.lock" not in stored  # the driver's lock on the experiment, released at the end


def run_search_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_missing_bucket_is_a_usage_error(s3_server, tmp_path):
    endpoint, env, fs = s3_server
    proc = run_search_cli(
        "--space",
        "batchnorm",
        "--dataset",
        "digits",
        "--storage-path",
        "s3://no-such-bucket/hpo",
        "--s3-endpoint",
        endpoint,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "bucket 'no-such-bucket' does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert files_under(fs, BUCKET) == []  # nothing written anywhere


def test_an_experiment_another_driver_holds_is_refused(s3_server, tmp_path, monkeypatch):
    """The bucket lock (experiment.lock) as run_search.py meets it: held by another process (this test's),
    a second driver of the experiment, with or without --resume, exits 2 naming the holder."""
    endpoint, env, fs = s3_server
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    uri = f"s3://{BUCKET}/{PREFIX}"
    with lock.acquire(fs, f"{BUCKET}/{PREFIX}/{NAME}", f"{uri}/{NAME}"):
        for argv in (("--resume",), ("--space", "batchnorm", "--dataset", "digits")):
            proc = run_search_cli(
                *argv, "--name", NAME, "--storage-path", uri, "--s3-endpoint", endpoint, env=env, cwd=tmp_path
            )
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert f"experiment {uri}/{NAME} is in use by another driver (pid {os.getpid()} on host " in proc.stderr
            assert "Traceback" not in proc.stderr
        assert files_under(fs, BUCKET) == [f"{PREFIX}/{NAME}/driver.lock"]  # the refused drivers wrote nothing


def test_unreachable_endpoint_is_a_usage_error(tmp_path):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    proc = run_search_cli(
        "--space",
        "batchnorm",
        "--dataset",
        "digits",
        "--storage-path",
        f"s3://{BUCKET}/hpo",
        "--s3-endpoint",
        f"http://127.0.0.1:{free_port()}",
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot reach it" in proc.stderr and "--s3-endpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
