"""One driver per experiment: a lock in the experiment folder, on a local disk (NFS too) or in a bucket.

Local folder: an OS lock (flock) on `<experiment>/driver.lock`, which the kernel drops when the driver
process ends however it ends (SIGKILL, OOM kill, a crashed node), so a killed driver never blocks a later
`--resume`; the file also holds who holds it, for the refusal message.

S3 bucket: the object `<experiment>/driver.lock`, created only if absent (S3's conditional write,
`If-None-Match: *`), holding who holds it; the holder rewrites it every HEARTBEAT_S seconds. A lock is
stale, and the next driver takes it over, when its holder is a process on this host that no longer
exists, or when the object was last written more than STALE_AFTER_S seconds ago by the bucket's own
clock (a driver on another host that died). The take-over is a conditional write on the stale object's
ETag (`If-Match`), so of two drivers taking over at once only one wins.

Other URI schemes (gs://, ...) get no lock: a warning says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import errno
import json
import os
import socket
import sys
import threading
import uuid
from typing import Any

import pyarrow.fs as pafs

from experiment import storage

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 30.0  # seconds between the holder's rewrites of a bucket lock
STALE_AFTER_S = 120.0  # a bucket lock not rewritten for this long (4 missed heartbeats) is stale


class LockHeld(Exception):
    """Another driver runs this experiment."""

    def __init__(self, where: str, holder: dict[str, Any] | None) -> None:
        self.where = where
        self.holder = holder or {}
        super().__init__(
            f"experiment {where} is in use by another driver ({describe(self.holder)}); wait for it to "
            "end or stop it, then run again (a driver killed outright releases it: at once on a local "
            f"disk, within {STALE_AFTER_S:.0f} s in a bucket)"
        )


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started_at')}"


def holder_record() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,  # tells this holder's record from a later one of the same pid
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def acquire(fs: pafs.FileSystem, path: str, uri: str, stale_after_s: float = STALE_AFTER_S) -> ExperimentLock:
    """Hold the lock of the experiment at `path` on `fs` (`uri`: how messages name it), or raise LockHeld.
    `stale_after_s`: the staleness rule of a bucket lock."""
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalLock.acquire(storage.join(path, LOCK_FILE), uri)
    if isinstance(fs, pafs.S3FileSystem):
        return S3Lock.acquire(fs, storage.join(path, LOCK_FILE), uri, stale_after_s)
    print(f"run_search.py: warning: no driver lock on {uri}: only local folders and s3:// have one", file=sys.stderr)
    return ExperimentLock()


def check(fs: pafs.FileSystem, path: str, uri: str) -> None:
    """Raise LockHeld if a live driver holds the experiment; writes nothing."""
    if isinstance(fs, pafs.LocalFileSystem):
        LocalLock.check(storage.join(path, LOCK_FILE), uri)
    elif isinstance(fs, pafs.S3FileSystem):
        S3Lock.check(fs, storage.join(path, LOCK_FILE), uri)


class ExperimentLock:
    """A held lock; `release` gives it up (also as a context manager). The base class holds nothing."""

    def release(self) -> None:
        pass

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---- local disk ------------------------------------------------------------------------------------


class LocalLock(ExperimentLock):
    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    @classmethod
    def acquire(cls, path: str, uri: str) -> ExperimentLock:
        import fcntl

        os.makedirs(os.path.dirname(path), exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockHeld(uri, read_local(path)) from None
            except OSError as e:  # a filesystem without locks (some FUSE mounts)
                os.close(fd)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                print(f"run_search.py: warning: no driver lock on {uri}: its filesystem has no locks", file=sys.stderr)
                return ExperimentLock()
            # A releasing holder unlinks the file before unlocking it: a lock won on an unlinked file
            # is no lock; open the file at `path` again.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        held = cls(path, fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder_record()).encode())
            os.fsync(fd)
        except OSError:  # a full disk: give the lock up again, and say why
            held.release()
            raise
        return held

    @staticmethod
    def check(path: str, uri: str) -> None:
        import fcntl

        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared lock writes nothing
        except BlockingIOError:
            raise LockHeld(uri, read_local(path)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
        finally:
            os.close(fd)  # closing drops the shared lock

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)  # closing drops the lock
        self.fd = None


def read_local(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):  # gone, or being written
        return None


# ---- S3 --------------------------------------------------------------------------------------------


class S3Lock(ExperimentLock):
    def __init__(self, client: Any, bucket: str, key: str, record: dict[str, Any], etag: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.record, self.etag = record, etag
        self.stopped = threading.Event()
        # Heartbeats written so far, and a condition notified after each: what shows, without a clock,
        # that the holder keeps its lock fresh (wait_for_beats).
        self.beats = 0
        self.beaten = threading.Condition()
        self.thread = threading.Thread(target=self._heartbeat, name="experiment-lock-heartbeat", daemon=True)
        self.thread.start()

    @classmethod
    def acquire(cls, fs: pafs.S3FileSystem, path: str, uri: str, stale_after_s: float = STALE_AFTER_S) -> S3Lock:
        client = s3_client(fs)
        bucket, key = path.split("/", 1)
        record = holder_record()
        body = json.dumps(record).encode()
        for _ in range(3):  # a holder may release between our write and our read
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
                return cls(client, bucket, key, record, etag)
            except client.exceptions.ClientError as e:
                if not precondition_failed(e):
                    raise
            current = read_s3(client, bucket, key)
            if current is None:
                continue
            holder, etag, age_s = current
            if not stale(holder, age_s, stale_after_s):
                raise LockHeld(uri, holder)
            try:  # take over the stale lock; only one of several drivers doing so at once succeeds
                etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)["ETag"]
                return cls(client, bucket, key, record, etag)
            except client.exceptions.ClientError as e:
                if not precondition_failed(e):
                    raise
        current = read_s3(client, bucket, key)
        raise LockHeld(uri, current[0] if current else None)

    @staticmethod
    def check(fs: pafs.S3FileSystem, path: str, uri: str, stale_after_s: float = STALE_AFTER_S) -> None:
        client = s3_client(fs)
        bucket, key = path.split("/", 1)
        current = read_s3(client, bucket, key)
        if current is not None and not stale(current[0], current[2], stale_after_s):
            raise LockHeld(uri, current[0])

    def _heartbeat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                body = json.dumps(self.record).encode()
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=self.etag)[
                    "ETag"
                ]
            except Exception as e:  # noqa: BLE001 - a missed heartbeat is retried; the search goes on
                if isinstance(e, self.client.exceptions.ClientError) and precondition_failed(e):
                    print(
                        f"run_search.py: warning: another driver took over the lock s3://{self.bucket}/{self.key} "
                        f"(this driver's heartbeat was over {STALE_AFTER_S:.0f} s late)",
                        file=sys.stderr,
                    )
                    return
            else:
                with self.beaten:
                    self.beats += 1
                    self.beaten.notify_all()

    def wait_for_beats(self, count: int, timeout: float) -> bool:
        """Whether `count` heartbeats have been written (waiting up to `timeout` seconds for them)."""
        with self.beaten:
            return self.beaten.wait_for(lambda: self.beats >= count, timeout)

    def release(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.thread.join(timeout=60)
        current = read_s3(self.client, self.bucket, self.key)
        if current is not None and current[0].get("token") == self.record["token"]:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


def s3_client(fs: pafs.S3FileSystem) -> Any:
    """A boto3 client for the bucket pyarrow reaches: pyarrow.fs cannot write conditionally. The endpoint
    and credentials come from the same environment (AWS_ENDPOINT_URL, --s3-endpoint sets it)."""
    import boto3

    return boto3.client("s3", region_name=fs.region or None)


def precondition_failed(e: Any) -> bool:
    """The conditional write lost: 412, or 409 when another conditional write on the key is in flight."""
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in (409, 412) or e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "409", "412")


def read_s3(client: Any, bucket: str, key: str) -> tuple[dict[str, Any], str, float] | None:
    """(holder record, ETag, seconds since last written by the bucket's clock), or None if absent."""
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    try:
        holder = json.loads(obj["Body"].read())
    except ValueError:
        holder = {}
    server_now = email.utils.parsedate_to_datetime(obj["ResponseMetadata"]["HTTPHeaders"]["date"])
    age_s = (server_now - obj["LastModified"]).total_seconds()
    return holder, obj["ETag"], age_s


def stale(holder: dict[str, Any], age_s: float, stale_after_s: float) -> bool:
    if age_s > stale_after_s:
        return True
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)
