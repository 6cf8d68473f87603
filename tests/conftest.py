import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

PROJECT = Path(__file__).resolve().parents[1]
BUCKET = "hpo-test"  # the bucket the s3_server fixture creates


def run_search(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """run_search.py in its own process, as a user runs it: Ray is process-global state."""
    return subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# Process-wide variables the driver's parts set for the Ray Tune run they prepare, when a test calls them
# in-process: tune_settings.result_loggers sets TUNE_DISABLE_AUTO_CALLBACK_LOGGERS (test_run_search_mlflow
# builds the loggers), tuning.study HPO_OPTUNA_STORAGE.
DRIVER_SET_VARIABLES = ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "HPO_OPTUNA_STORAGE")


@pytest.fixture(autouse=True)
def driver_set_variables_restored():
    """Each test gets DRIVER_SET_VARIABLES back as it found them. Left set, later tests' own Tuners wrote
    no result.json (4 failures, only in the whole suite) and a restored searcher opened another test's
    journal."""
    saved = {name: os.environ.get(name) for name in DRIVER_SET_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def search():
    return run_search


@pytest.fixture
def isolated_registry():
    """Registries as they were before the test: entries a test (or a plugin it loads) registers, and the
    plugin modules it imports, are gone afterwards."""
    from search_spaces import SPACES
    from trainables import registry

    registry.load_built_ins()
    tables = (registry.MODELS, registry.DATASETS, registry.KNOBS, registry.CALLBACKS, SPACES)
    saved = [dict(t) for t in tables]
    modules = set(sys.modules)
    yield registry
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:
        if not name.startswith(("trainables", "search_spaces", "analysis", "keras", "tensorflow")):
            sys.modules.pop(name, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(server: subprocess.Popen, port: int, log: Path, timeout: float, poll: float = 0.5) -> None:
    """Return once `server` accepts connections on loopback `port`; AssertionError with its `log` when it
    exits first or `timeout` seconds pass (a busy machine starts a server slowly)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError(f"{server.args[2]} did not start: {log.read_text()}") from None
            time.sleep(poll)


@pytest.fixture
def s3_server(tmp_path):
    """(endpoint URL, env with dummy credentials) of a fresh moto S3 server with an empty bucket."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "moto.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_server(server, port, tmp_path / "moto.log", timeout=60)
        # Dummy credentials: moto accepts any; the AWS SDK refuses to sign without some.
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.pop("AWS_ENDPOINT_URL", None)  # the flag must carry it, not the test's environment
        bucket_fs = pafs.S3FileSystem(
            endpoint_override=endpoint,
            allow_bucket_creation=True,
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        bucket_fs.create_dir(BUCKET)
        yield endpoint, env, bucket_fs
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
