"""Where an experiment lives and what it records about itself: `experiment.json` (written here and
nowhere else) and the provenance every record carries (git sha, library versions)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from experiment import storage
from experiment.errors import UsageError

PROJECT_DIR = Path(__file__).resolve().parents[1]
VERSIONED = ("tensorflow", "keras", "ray", "optuna")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Where an experiment lives: filesystem, path on it, path or URI as the user sees it."""

    name: str
    fs: Any
    path: str
    uri: str

    @property
    def root(self) -> str:
        """What Ray Tune's storage_path takes: the URI for a bucket, else the local path."""
        return self.uri if storage.is_uri(self.uri) else self.path

    @property
    def tables(self) -> str:
        return f"{self.uri}/tables" if storage.is_uri(self.uri) else storage.join(self.path, "tables")

    def join(self, *parts: str) -> str:
        return storage.join(self.path, *parts)

    def exists(self, *parts: str) -> bool:
        return storage.exists(self.fs, self.join(*parts)) if parts else storage.exists(self.fs, self.path)


def locate(storage_path: str, name: str) -> Experiment:
    """The experiment `name` under `storage_path` (a folder, or an s3:// / gs:// URI whose bucket must
    exist and be reachable)."""
    if not storage.is_uri(storage_path):
        fs, path = storage.resolve(Path(storage_path) / name)
        return Experiment(name, fs, path, path)
    uri = f"{storage_path.rstrip('/')}/{name}"
    try:
        fs, path = storage.resolve(uri)
        bucket = fs.get_file_info(path.split("/", 1)[0])
    except (OSError, ValueError) as e:  # bad URI, unreachable endpoint, refused credentials
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--storage-path {storage_path}: cannot reach it ({first}); check the URI, "
            "--s3-endpoint and the credentials in the environment"
        ) from None
    if bucket.type == pafs.FileType.NotFound:
        raise UsageError(f"--storage-path {storage_path}: bucket {bucket.path!r} does not exist; create it first")
    return Experiment(name, fs, path, uri)


def provenance() -> dict[str, Any]:
    """The code that ran: its git sha (`-dirty` with uncommitted changes) and the library versions."""
    versions: dict[str, str | None] = {}
    for pkg in VERSIONED:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    return {"git_sha": sha, "versions": versions}


def write_record(exp: Experiment, record: dict[str, Any]) -> None:
    """experiment.json, stamped with when it was created and by what code (docs/design.md lists its keys)."""
    meta = {"experiment": exp.name, **record, "created_at": dt.datetime.now(dt.UTC).isoformat(), **provenance()}
    _write(exp, meta)


def note_runs(exp: Experiment, runs: dict[str, int]) -> None:
    """experiment.json's `runs`: each Ray Tune run of the experiment (its folder) and how many trials it
    runs, so a resume knows what a run it continues was asked for after the search was extended."""
    _write(exp, {**read_record(exp), "runs": runs})


def note_resumed(exp: Experiment, before: dict[str, Any], argv: list[str], changed: dict[str, Any]) -> None:
    """A resume keeps the original record, with what it changed (`changed`, e.g. more trials), and notes
    when it was resumed and from what code."""
    now = dt.datetime.now(dt.UTC).isoformat()
    resumed = [*before.get("resumed", []), {"at": now, "argv": argv, **provenance()}]
    _write(exp, {**before, **changed, "resumed": resumed})


def _write(exp: Experiment, meta: dict[str, Any]) -> None:
    storage.write_text(exp.fs, exp.join(storage.EXPERIMENT_FILE), json.dumps(meta, indent=2, default=str))


def read_record(exp: Experiment) -> dict[str, Any]:
    return storage.read_json(exp.fs, exp.join(storage.EXPERIMENT_FILE))
