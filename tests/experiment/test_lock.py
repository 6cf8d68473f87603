"""The experiment lock (experiment.lock): held by a real second process, on a local folder and in a real
S3-compatible bucket (moto on loopback); a holder killed outright never blocks the next driver."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from experiment import lock, storage
from tests.conftest import BUCKET

PROJECT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from experiment import lock, storage
fs, path = storage.resolve(sys.argv[1])
held = lock.acquire(fs, path, sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def hold_in_another_process(where: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, where],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT), **(env or {})},
    )
    line = proc.stdout.readline().strip()
    assert line == "held", proc.stderr.read() if proc.poll() is not None else line
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


# ---- local folder -----------------------------------------------------------------------------------


def test_local_lock_refuses_a_second_driver_and_names_the_holder(tmp_path):
    exp = tmp_path / "x"
    fs, path = storage.resolve(exp)
    holder = hold_in_another_process(str(exp))
    try:
        for attempt in (lock.acquire, lock.check):
            with pytest.raises(lock.LockHeld) as refused:
                attempt(fs, path, str(exp))
            message = str(refused.value)
            assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in message
            assert str(exp) in message
        record = json.loads((exp / lock.LOCK_FILE).read_text())
        assert record["pid"] == holder.pid
    finally:
        kill(holder)


def test_local_lock_of_a_killed_driver_is_free_at_once(tmp_path):
    exp = tmp_path / "x"
    fs, path = storage.resolve(exp)
    kill(hold_in_another_process(str(exp)))
    assert (exp / lock.LOCK_FILE).exists()  # left behind by the killed holder, and no obstacle:
    lock.check(fs, path, str(exp))
    with lock.acquire(fs, path, str(exp)):
        assert json.loads((exp / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (exp / lock.LOCK_FILE).exists()  # released: removed
    with lock.acquire(fs, path, str(exp)):  # and free again
        pass


def test_checking_the_local_lock_writes_nothing(tmp_path):
    exp = tmp_path / "x"
    exp.mkdir()
    fs, path = storage.resolve(exp)
    lock.check(fs, path, str(exp))
    assert snapshot(tmp_path) == {"x": "dir"}
    holder = hold_in_another_process(str(exp))
    try:
        before = snapshot(tmp_path)
        with pytest.raises(lock.LockHeld):
            lock.check(fs, path, str(exp))
        assert snapshot(tmp_path) == before
    finally:
        kill(holder)


# ---- S3 bucket ----------------------------------------------------------------------------------------


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """(endpoint, env, pyarrow S3 filesystem, boto3 client) with this process pointed at the server."""
    endpoint, env, fs = s3_server
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint, {**env, "AWS_ENDPOINT_URL": endpoint}, fs, boto3.client("s3", region_name="us-east-1")


def test_the_s3_server_honours_conditional_writes(bucket):
    """What the bucket lock stands on: a create-if-absent and a replace-if-unchanged that can lose."""
    *_, client = bucket
    first = client.put_object(Bucket=BUCKET, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as lost:
        client.put_object(Bucket=BUCKET, Key="k", Body=b"2", IfNoneMatch="*")
    assert lock.precondition_failed(lost.value)
    client.put_object(Bucket=BUCKET, Key="k", Body=b"3", IfMatch=first)
    with pytest.raises(ClientError) as lost:
        client.put_object(Bucket=BUCKET, Key="k", Body=b"4", IfMatch=first)
    assert lock.precondition_failed(lost.value)


def test_s3_lock_refuses_a_second_driver_then_a_killed_holder_is_stale_at_once_on_its_host(bucket):
    _, env, fs, client = bucket
    uri = f"s3://{BUCKET}/exp"
    path = f"{BUCKET}/exp"
    holder = hold_in_another_process(uri, env)
    try:
        for attempt in (lock.acquire, lock.check):
            with pytest.raises(lock.LockHeld, match=f"pid {holder.pid} on host {socket.gethostname()}"):
                attempt(fs, path, uri)
    finally:
        kill(holder)
    assert json.loads(client.get_object(Bucket=BUCKET, Key="exp/driver.lock")["Body"].read())["pid"] == holder.pid
    with lock.acquire(fs, path, uri):  # same host, holder pid gone: taken over without waiting
        record = json.loads(client.get_object(Bucket=BUCKET, Key="exp/driver.lock")["Body"].read())
        assert record["pid"] == os.getpid()
    with pytest.raises(client.exceptions.NoSuchKey):  # released: deleted
        client.get_object(Bucket=BUCKET, Key="exp/driver.lock")


def test_s3_lock_of_another_host_is_held_until_its_heartbeat_is_stale(bucket):
    _, _, fs, client = bucket
    uri, path = f"s3://{BUCKET}/exp", f"{BUCKET}/exp"
    other = {"host": "elsewhere", "pid": 1, "started_at": "2026-01-01T00:00:00+00:00", "token": "t"}
    client.put_object(Bucket=BUCKET, Key="exp/driver.lock", Body=json.dumps(other).encode())
    with pytest.raises(lock.LockHeld, match="pid 1 on host elsewhere"):
        lock.acquire(fs, path, uri)
    time.sleep(2.5)  # the bucket's clock has a resolution of one second
    with lock.acquire(fs, path, uri, stale_after_s=1.0):
        record = json.loads(client.get_object(Bucket=BUCKET, Key="exp/driver.lock")["Body"].read())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()


def test_s3_lock_heartbeat_keeps_it_fresh(bucket, monkeypatch):
    _, _, fs, client = bucket
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.5)
    uri, path = f"s3://{BUCKET}/exp", f"{BUCKET}/exp"
    with lock.acquire(fs, path, uri):
        time.sleep(3.5)
        _, _, age_s = lock.read_s3(client, BUCKET, "exp/driver.lock")
        assert age_s <= 1.5, age_s  # rewritten in the last heartbeat or two, not 3.5 s ago
        # So a driver on another host, with a short staleness rule, still finds it held.
        other = {"host": "elsewhere", "pid": 1}
        assert not lock.stale(other, age_s, stale_after_s=2.0)


RACER = """
import sys, time
from experiment import lock, storage
fs, path = storage.resolve(sys.argv[1])
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # all racers try at the same moment
try:
    held = lock.acquire(fs, path, sys.argv[1])
except lock.LockHeld:
    print("refused", flush=True)
else:
    print("held", flush=True)
    time.sleep(3)  # still holding while the others try
    held.release()
"""


def race(where: str, env: dict | None = None, racers: int = 4) -> list[str]:
    start = time.time() + 4  # after every racer has imported
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, where, str(start)],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT), **(env or {})},
        )
        for _ in range(racers)
    ]
    return sorted(p.communicate(timeout=60)[0].strip() for p in procs)


def test_of_drivers_starting_together_exactly_one_holds_the_local_lock(tmp_path):
    assert race(str(tmp_path / "x")) == ["held", "refused", "refused", "refused"]


def test_of_drivers_starting_together_exactly_one_holds_the_s3_lock(bucket):
    _, env, *_ = bucket
    assert race(f"s3://{BUCKET}/exp", env) == ["held", "refused", "refused", "refused"]
