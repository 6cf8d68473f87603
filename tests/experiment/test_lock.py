"""The experiment lock (experiment.lock): held by a real second process, on a local folder and in a real
S3-compatible bucket (moto on loopback); a holder killed outright never blocks the next driver. No test
waits on the wall clock: processes say where they are on their stdout and wait on their stdin, the
bucket's clock is moved by the test, and the heartbeat is counted by the holder."""

import datetime as dt
import email.utils
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError

from experiment import lock, storage
from tests.conftest import BUCKET

PROJECT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from experiment import lock, storage
fs, path = storage.resolve(sys.argv[1])
held = lock.acquire(fs, path, sys.argv[1])
print("held", flush=True)
sys.stdin.readline()  # holds until the test closes its stdin, or kills it
"""


def hold_in_another_process(where: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, where],
        cwd=PROJECT,
        stdin=subprocess.PIPE,
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


def bucket_clock_moved_on(monkeypatch, seconds: float) -> None:
    """Make the bucket's clock read `seconds` later than it does: every lock object looks that much older
    (lock.read_s3 measures an object's age by the bucket's own clock)."""
    real = lock.read_s3

    def later(client, bucket, key):
        current = real(client, bucket, key)
        return None if current is None else (current[0], current[1], current[2] + seconds)

    monkeypatch.setattr(lock, "read_s3", later)


def test_s3_lock_of_another_host_is_held_until_its_heartbeat_is_stale(bucket, monkeypatch):
    _, _, fs, client = bucket
    uri, path = f"s3://{BUCKET}/exp", f"{BUCKET}/exp"
    other = {"host": "elsewhere", "pid": 1, "started_at": "2026-01-01T00:00:00+00:00", "token": "t"}
    client.put_object(Bucket=BUCKET, Key="exp/driver.lock", Body=json.dumps(other).encode())
    with pytest.raises(lock.LockHeld, match="pid 1 on host elsewhere"):
        lock.acquire(fs, path, uri)
    # Last written well within the rule (the margin: the real seconds this test takes, at 1 s resolution).
    bucket_clock_moved_on(monkeypatch, lock.STALE_AFTER_S - 10)
    with pytest.raises(lock.LockHeld, match="pid 1 on host elsewhere"):
        lock.acquire(fs, path, uri)
    bucket_clock_moved_on(monkeypatch, 11)  # and now past it: the other host's driver died
    with lock.acquire(fs, path, uri):
        record = json.loads(client.get_object(Bucket=BUCKET, Key="exp/driver.lock")["Body"].read())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()


class FakeBucket:
    """A boto3 S3 client of one bucket with a clock the test moves and writes it can hold back:
    conditional puts (If-None-Match: *, If-Match: ETag) as S3 does them, LastModified and the Date
    header from the clock."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.objects: dict[str, tuple[bytes, str, dt.datetime]] = {}
        self.lock = threading.Lock()  # the holder's heartbeat thread writes while the test reads
        self.writable = threading.Event()  # cleared: a put waits (the heartbeat is held back)
        self.writable.set()
        self.exceptions = SimpleNamespace(ClientError=ClientError, NoSuchKey=type("NoSuchKey", (Exception,), {}))

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += dt.timedelta(seconds=seconds)

    def put_object(self, Bucket, Key, Body, IfNoneMatch=None, IfMatch=None):
        self.writable.wait()
        with self.lock:
            current = self.objects.get(Key)
            if (IfNoneMatch == "*" and current) or (IfMatch is not None and (not current or current[1] != IfMatch)):
                failed = {"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}}
                raise ClientError(failed, "PutObject")
            etag = uuid.uuid4().hex
            self.objects[Key] = (Body, etag, self.now)
            return {"ETag": etag}

    def get_object(self, Bucket, Key):
        with self.lock:
            if Key not in self.objects:
                raise self.exceptions.NoSuchKey(Key)
            body, etag, written = self.objects[Key]
            headers = {"date": email.utils.format_datetime(self.now, usegmt=True)}
            return {
                "Body": io.BytesIO(body),
                "ETag": etag,
                "LastModified": written,
                "ResponseMetadata": {"HTTPHeaders": headers},
            }

    def delete_object(self, Bucket, Key):
        with self.lock:
            self.objects.pop(Key, None)


def test_s3_lock_heartbeat_keeps_it_fresh(monkeypatch):
    """With its heartbeat held back, a lock the bucket's clock has moved 150 s past is stale to a driver
    on another host; let the holder beat once and it is fresh again: held."""
    fake = FakeBucket()
    monkeypatch.setattr(lock, "s3_client", lambda _fs: fake)
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.01)  # beats as fast as the test lets it; no clock read
    key = "exp/driver.lock"

    def seen_from_another_host() -> tuple[dict, float, bool]:
        holder, _, age_s = lock.read_s3(fake, BUCKET, key)
        return holder, age_s, lock.stale({**holder, "host": "elsewhere"}, age_s, lock.STALE_AFTER_S)

    with lock.S3Lock.acquire(None, f"{BUCKET}/{key}", f"s3://{BUCKET}/exp") as held:
        assert held.wait_for_beats(1, timeout=60)
        fake.writable.clear()
        fake.advance(lock.STALE_AFTER_S + 30)
        _, age_s, is_stale = seen_from_another_host()
        assert age_s == lock.STALE_AFTER_S + 30 and is_stale
        beats = held.beats
        fake.writable.set()
        assert held.wait_for_beats(beats + 1, timeout=60)  # written by the moved clock
        holder, age_s, is_stale = seen_from_another_host()
        assert holder["pid"] == os.getpid() and age_s == 0 and not is_stale
    assert key not in fake.objects  # released: deleted


RACER = """
import sys
from experiment import lock, storage
fs, path = storage.resolve(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # go: every racer has imported and waits here
try:
    held = lock.acquire(fs, path, sys.argv[1])
except lock.LockHeld:
    print("refused", flush=True)
else:
    print("held", flush=True)
    sys.stdin.readline()  # holds until every racer has answered
    held.release()
"""


def race(where: str, env: dict | None = None, racers: int = 4) -> list[str]:
    """Start `racers` processes, tell them all to acquire once every one is ready, and have the one that
    holds it hold it until every other has answered: whatever the interleaving, one answer per racer."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, where],
            cwd=PROJECT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT), **(env or {})},
        )
        for _ in range(racers)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * racers
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        answers = [p.stdout.readline().strip() for p in procs]
        for p, answer in zip(procs, answers, strict=True):
            if answer == "held":
                p.stdin.write("release\n")
                p.stdin.flush()
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            p.kill()
    return sorted(answers)


def test_of_drivers_starting_together_exactly_one_holds_the_local_lock(tmp_path):
    assert race(str(tmp_path / "x")) == ["held", "refused", "refused", "refused"]


def test_of_drivers_starting_together_exactly_one_holds_the_s3_lock(bucket):
    _, env, *_ = bucket
    assert race(f"s3://{BUCKET}/exp", env) == ["held", "refused", "refused", "refused"]
