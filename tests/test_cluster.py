"""A Ray cluster of two nodes on this machine, joined with --address: trials spread over both.

Each node is a real `ray start` (head, then a worker joining it) with one CPU, so trials of one CPU
each cannot all fit on one node. The cluster is private to this test: its own temp dir, explicit
ports, and its own authentication token, so it neither joins nor disturbs any other Ray on the host.
It is torn down by ending the `ray start --block` processes (which stop what they started), then
any leftover process whose command line names the private temp dir; never with `ray stop`, which
would stop every Ray on the machine. One test loses the worker node: it kills that node's processes
by their session (the worker's `ray start` leads one), which no other Ray on the host shares.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import pytest

import driver
import run_search
from analysis.tables import read_table
from search_spaces import SPACES
from tests.search_runs import reports
from tuning import cluster

PROJECT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
NUM_SAMPLES, EPOCHS = 3, 1


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def node_ports(ports: list[int]) -> list[str]:
    """The per-node ports Ray would otherwise take from fixed defaults shared by every Ray on the host."""
    names = (
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
        "--node-manager-port",
        "--object-manager-port",
    )
    return [arg for name, port in zip(names, ports, strict=True) for arg in (name, str(port))]


def processes_naming(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(proc.name))
    return pids


def active_nodes(address: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [RAY, "status", "--address", address], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
    return re.findall(r"node_([0-9a-f]+)", active)


class Cluster:
    """Two `ray start --block` nodes of one CPU each, private to this module. The worker node runs in a
    session of its own (start_new_session), which its raylet and trial workers inherit, so it can be
    killed outright, as a lost machine, without touching any other process; and started again."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
        }
        self.env.pop("RAY_ADDRESS", None)
        self.logs = Path(self.temp_dir) / "start-logs"
        self.logs.mkdir()
        self.starts: list[tuple[subprocess.Popen, IO[str]]] = []
        self.address = ""
        self.head_id = ""
        self.worker: subprocess.Popen | None = None
        self.worker_id = ""
        self.lost: set[str] = set()  # ids of worker nodes killed: Ray lists them as active for a while

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        # 150 MB object store per node: the digits data is ~1 MB; Ray's default is 30 % of RAM.
        common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--node-ip-address", "127.0.0.1"]
        common += ["--object-store-memory", str(150 * 1024**2), "--temp-dir", self.temp_dir, "--disable-usage-stats"]
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [*cmd, *common], stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        self.starts.append((proc, log))
        return proc

    def start_head(self) -> None:
        ports = free_ports(8)
        self.address = f"127.0.0.1:{ports[0]}"
        head = [RAY, "start", "--head", "--port", str(ports[0]), "--ray-client-server-port", str(ports[1])]
        self._start("head", [*head, "--include-dashboard", "false", *node_ports(ports[2:8])])
        _wait_for(lambda: "Ray runtime started" in (self.logs / "head.log").read_text(), 120, self.logs)
        _wait_for(lambda: len(self.nodes()) == 1, 120, self.logs)
        (self.head_id,) = self.nodes()

    def start_worker(self) -> None:
        """A worker node joins (again): fresh ports, since the last one's may still be held."""
        self.worker = self._start("worker", [RAY, "start", "--address", self.address, *node_ports(free_ports(6))])
        _wait_for(lambda: len(self.live_nodes()) == 2, 180, self.logs)
        (self.worker_id,) = set(self.live_nodes()) - {self.head_id}

    def kill_worker(self) -> None:
        """SIGKILL the worker node: its `ray start`, raylet, agents and trial workers (its session)."""
        assert self.worker is not None
        self.lost.add(self.worker_id)  # known beforehand: `ray status` takes seconds, the kill must not wait
        session = self.worker.pid
        for pid in [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and _sid(int(e.name)) == session]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.worker.wait(timeout=60)

    def nodes(self) -> list[str]:
        return active_nodes(self.address, self.env)

    def live_nodes(self) -> list[str]:
        return [n for n in self.nodes() if n not in self.lost]

    def ensure_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            self.start_worker()

    def stop(self) -> None:
        for proc, _ in self.starts:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
        for proc, log in self.starts:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        deadline = time.monotonic() + 30
        while (
            left := [p for p in processes_naming(self.temp_dir) if p != os.getpid()]
        ) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 10 else signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


@pytest.fixture(scope="module")  # one cluster for the tests below: starting one takes a minute
def ray_cluster():
    cluster = Cluster()
    try:
        cluster.start_head()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def two_node_cluster(ray_cluster):
    """(address, env, node ids) of the cluster with both nodes up: a worker node a test killed rejoins."""
    ray_cluster.ensure_worker()
    return ray_cluster.address, ray_cluster.env, ray_cluster.live_nodes()


def _wait_for(condition, timeout_s: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(logs.glob("*.log")))
    raise AssertionError(f"Ray cluster not up within {timeout_s} s\n{tails}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_through_address_spreads_trials_over_both_nodes(two_node_cluster, tmp_path):
    address, env, node_ids = two_node_cluster
    assert len(node_ids) == 2
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
            "--cpus-per-trial",
            "1",
            "--address",
            address,
            "--storage-path",
            str(tmp_path),
            "--name",
            "cluster",
            "-q",
        ],
        cwd=tmp_path,  # run from elsewhere, as a user on a cluster login node would
        capture_output=True,
        text=True,
        timeout=800,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    trials = read_table(tmp_path / "cluster", "trials")
    epochs = read_table(tmp_path / "cluster", "epochs")
    # Complete tables: every trial finished its budget, one epoch row per trial and epoch.
    assert len(trials) == NUM_SAMPLES
    assert set(trials["status"]) == {"completed"}
    assert trials["test_accuracy"].notna().all() and trials["error"].isna().all()
    assert len(epochs) == NUM_SAMPLES * EPOCHS
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    # Each node has one CPU and each trial takes one, so the trials ran on both nodes of this cluster.
    assert trials["node"].notna().all()
    ran_on = {node.split(":", 1)[1] for node in trials["node"]}
    assert ran_on == {node_id[:12] for node_id in node_ids}, (ran_on, node_ids)
    assert (trials["gpus"] == 0).all()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_plugin_reaches_the_workers_on_both_nodes(two_node_cluster, tmp_path):
    """The example plugin from a folder outside the project (so not in the shipped working dir): the
    runtime env's py_modules carries it, and every trial, on either node, imports it by module name."""
    address, env, node_ids = two_node_cluster
    plugin = tmp_path / "mine" / "resnet_mini_plugin.py"
    plugin.parent.mkdir()
    shutil.copy(PROJECT / "examples" / "resnet_mini_plugin.py", plugin)
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "run_search.py"),
            "--plugin",
            str(plugin),
            "--space",
            "resnet_mini",
            "--search",
            "grid",
            "--max-epochs",
            "1",
            "--scheduler",
            "fifo",
            "--cpus-per-trial",
            "1",
            "--address",
            address,
            "--storage-path",
            str(tmp_path),
            "--name",
            "plugin",
            "-q",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=800,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = read_table(tmp_path / "plugin", "trials")
    assert set(trials["status"]) == {"completed"} and trials["error"].isna().all()
    assert set(trials["model"]) == {"resnet_mini", "basenet"}
    assert trials.set_index("model").loc["resnet_mini", "res_blocks"] == 1
    ran_on = {node.split(":", 1)[1] for node in trials["node"]}
    assert ran_on == {node_id[:12] for node_id in node_ids}, (ran_on, node_ids)


# Enough epochs that the trial on the worker node is still training when the node is killed.
LOST_TRIALS, LOST_EPOCHS = 3, 6


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_lost_worker_node_its_trials_continue_on_the_head_from_their_checkpoints(ray_cluster, tmp_path):
    """The worker node (raylet, agents, trial workers) is SIGKILLed once a trial on it has checkpointed
    an early epoch: Ray declares the node dead, Tune retries its trial on the head node from the checkpoint in
    the shared storage path (a local folder both nodes see, as NFS would be), and the experiment completes
    with complete tables whose `node` column names the head for that trial. Kept last of the cluster's
    end-to-end tests: a later one waits for the worker node to rejoin."""
    ray_cluster.ensure_worker()
    on_worker, on_head = ray_cluster.worker_id[:12], ray_cluster.head_id[:12]
    exp, log = tmp_path / "lost", tmp_path / "log"
    args = ["--space", "basenet", "--dataset", "digits", "--num-samples", str(LOST_TRIALS)]
    args += ["--max-epochs", str(LOST_EPOCHS), "--scheduler", "fifo", "--cpus-per-trial", "1"]
    args += ["--address", ray_cluster.address, "--storage-path", str(tmp_path), "--name", "lost", "-q"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(PROJECT / "run_search.py"), *args],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ray_cluster.env,
        )
    try:

        def first_on_worker() -> tuple[str, int] | None:
            for trial, rows in reports(exp).items():
                epochs = [r["epoch"] for r in rows if r.get("node", "").endswith(on_worker)]
                if epochs and max(epochs) <= LOST_EPOCHS // 2:
                    return trial, max(epochs)
            return None

        deadline = time.monotonic() + 400
        while (hit := first_on_worker()) is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.3)
        ray_cluster.kill_worker()
        assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    victim, _ = hit
    trials = read_table(exp, "trials").set_index("trial_id")
    epochs = read_table(exp, "epochs")
    assert len(trials) == LOST_TRIALS
    assert set(trials["status"]) == {"completed"}, trials[["status", "error"]]
    assert trials["error"].isna().all() and trials["test_accuracy"].notna().all()
    assert len(epochs) == LOST_TRIALS * LOST_EPOCHS and not epochs.duplicated(["trial_id", "epoch"]).any()
    # The lost node's trial went on on the head from its last checkpoint: the one of the last epoch it
    # reported there, or of the epoch before when the node died while Tune was registering the newest
    # (reported, not yet recorded): one epoch trained again, not the trial from scratch. The table says
    # where it ended.
    rows = reports(exp)[victim]
    lost_at = max(r["epoch"] for r in rows if r["node"].endswith(on_worker))
    after = [r for r in rows if r["node"].endswith(on_head)]
    assert after, f"the trial on the worker node finished before the node was killed: {hit}"
    assert after[0]["epoch"] in (lost_at, lost_at + 1) and after[0]["iterations_since_restore"] == 1, rows
    assert trials.loc[victim, "node"].endswith(on_head)
    # Every trial's node is the one its last epoch ran on.
    for trial, trial_rows in reports(exp).items():
        assert trials.loc[trial, "node"] == [r for r in trial_rows if "epoch" in r][-1]["node"]


def test_runtime_env_ships_plugin_files_as_py_modules(tmp_path):
    env = cluster.cluster_runtime_env({}, [str(tmp_path / "mine.py"), "installed_plugin_module"])
    assert env["py_modules"] == [str(tmp_path / "mine.py")]  # a module name must be importable on the nodes


@pytest.mark.parametrize(
    ("space", "flag", "cluster_gpus", "expected"),
    [
        ("transfer", None, 8.0, 1.0),  # a backbone trial takes a whole GPU where there are GPUs
        ("transfer", None, 0.0, 0.0),  # ... and still runs on a CPU-only machine
        ("batchnorm", None, 8.0, 0.0),  # small CNN spaces stay on CPUs unless asked
        ("batchnorm", 0.25, 8.0, 0.25),  # the flag wins: four trials share a GPU
        ("transfer", 0.5, 8.0, 0.5),
    ],
)
def test_gpus_per_trial_default_follows_the_cluster(space, flag, cluster_gpus, expected):
    assert cluster.trial_gpus(flag, SPACES[space].gpus_per_trial, cluster_gpus) == expected


@pytest.mark.parametrize(
    ("storage", "endpoint", "message"),
    [
        ("s3://bucket/hpo", "minio:9000", "--s3-endpoint must be an http:// or https:// URL"),
        (None, "http://127.0.0.1:9000", "--s3-endpoint needs an s3:// --storage-path"),
    ],
)
def test_bad_s3_endpoint_is_a_usage_error(storage, endpoint, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    code = run_search.main(
        [
            "--space",
            "batchnorm",
            "--dataset",
            "digits",
            "--storage-path",
            storage or str(tmp_path / "results"),
            "--s3-endpoint",
            endpoint,
        ]
    )
    err = capsys.readouterr().err
    assert code == driver.EXIT_USAGE
    assert message in err and "Traceback" not in err
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_runtime_env_ships_code_and_endpoint_but_no_credentials():
    env = cluster.cluster_runtime_env({"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_SECRET_ACCESS_KEY": "s"})
    assert env["working_dir"] == str(PROJECT) and ".venv" in env["excludes"]
    assert env["env_vars"] == {"AWS_ENDPOINT_URL": "http://minio:9000"}
    assert cluster.cluster_runtime_env({}).keys() == {"working_dir", "excludes"}


def test_runtime_env_defers_to_a_ray_jobs_own():
    # `ray job submit --working-dir . --runtime-env-json '{"env_vars": {...}}'`: Ray refuses to merge
    # a driver's runtime env that sets the same fields, so the driver leaves them to the job.
    job = json.dumps(
        {
            "runtime_env": {
                "working_dir": "gcs://_ray_pkg_abc.zip",
                "env_vars": {"AWS_ENDPOINT_URL": "http://minio:9000"},
            }
        }
    )
    env = cluster.cluster_runtime_env({"RAY_JOB_CONFIG_JSON_ENV_VAR": job, "AWS_ENDPOINT_URL": "http://minio:9000"})
    assert env == {}
