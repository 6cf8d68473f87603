"""Where the search's Optuna study lives: the journal file in the experiment folder (the default), an
RDB the user names (--optuna-storage), or, for a bucket, a journal on the driver's disk copied into the
experiment folder when the search phase ends, fails or is interrupted."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from experiment import storage
from experiment.errors import UsageError
from experiment.folder import Experiment

JOURNAL_FILE = "optuna.journal"  # the search's Optuna study, in the experiment folder


@dataclasses.dataclass(frozen=True)
class OptunaStudy:
    """`spec`: a journal file on this machine or an RDB URL, under the experiment's name. A journal needs
    a local file system, so for a bucket it lives on the driver's disk and `remote` (on `fs`) is its copy
    in the experiment folder, read back by --resume."""

    name: str
    spec: str
    remote: str | None = None
    fs: Any = None

    @property
    def shown(self) -> str:
        """The spec as printed: never a database password in a log."""
        if "://" not in self.spec:
            return self.spec
        from sqlalchemy.engine import make_url

        return make_url(self.spec).render_as_string(hide_password=True)

    def dashboard_command(self) -> str:
        return f"optuna-dashboard {shlex.quote(self.shown)}"


def open_study(exp: Experiment, url: str | None, resume: bool) -> OptunaStudy:
    """The search's study for `exp`: in the RDB at `url` when given, else a journal (see the module doc).
    Names its storage to a searcher Tune restores (optuna_search.STORAGE_ENV)."""
    from tuning.optuna_search import STORAGE_ENV, open_storage

    if url:
        try:
            names = {s.study_name for s in open_storage(url).get_all_studies()} if "://" in url else None
        except Exception as e:  # noqa: BLE001 - a bad URL, a missing DB driver, an unreachable server
            raise UsageError(f"--optuna-storage {url}: cannot open it ({type(e).__name__}: {e})") from None
        if names is None:
            raise UsageError(f"--optuna-storage {url!r}: expected an RDB URL such as sqlite:///optuna.db")
        if not resume and exp.name in names:
            raise UsageError(f"--optuna-storage {url} already holds a study {exp.name!r}; pick another --name")
        study = OptunaStudy(exp.name, url)
    elif not storage.is_uri(exp.uri):  # created in the experiment folder when the searcher opens it
        study = OptunaStudy(exp.name, exp.join(JOURNAL_FILE))
    else:
        study = _local_journal_of_bucket(exp, resume)
    if resume and not url:  # a journal (on this machine)
        cut = drop_cut_short_line(study.spec)
        if cut:
            print(f"{JOURNAL_FILE}: dropped a last line cut short after {cut} bytes (a write a full disk stopped)")
    # Tune unpickles a resumed searcher inside Tuner.restore, with no hook to hand it a path: the
    # variable tells it where the study is now (the experiment folder may have moved since).
    os.environ[STORAGE_ENV] = study.spec
    return study


def drop_cut_short_line(path: str) -> int:
    """Truncate the journal at `path` after its last complete line; the length of what was dropped (0: none).

    Optuna appends each operation as one JSON line. A write that a full disk (or a kill) stopped leaves a line
    cut short at the end, an operation Optuna raised on and never applied; its reader skips such a last line,
    but the next append glues a whole line onto it, and from then on every read of the study fails with a
    JSONDecodeError in the middle of the file (Tune's resume then restarts the experiment). Called by a
    resuming driver, which holds the experiment's lock, before anything appends."""
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:  # back from the end, 64 KiB at a time, to the last newline
            start = max(0, end - (64 << 10))
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
        return size - end


def _local_journal_of_bucket(exp: Experiment, resume: bool) -> OptunaStudy:
    key = hashlib.sha1(exp.uri.encode()).hexdigest()[:8]
    local = Path(tempfile.gettempdir()) / "hpo-optuna" / f"{exp.name}-{key}" / JOURNAL_FILE
    local.parent.mkdir(parents=True, exist_ok=True)
    remote = exp.join(JOURNAL_FILE)
    if not resume:
        local.unlink(missing_ok=True)  # a journal of an earlier experiment under this name
    else:
        # A journal only grows, so the longer copy is the newer: the bucket's, unless this driver was
        # killed after its last upload and left a longer one here.
        info = exp.fs.get_file_info(remote)
        if info.type == pafs.FileType.File and (not local.exists() or local.stat().st_size < info.size):
            pafs.copy_files(remote, str(local), source_filesystem=exp.fs)
    return OptunaStudy(exp.name, str(local), remote, exp.fs)


def upload_study(study: OptunaStudy | None) -> None:
    """Copy a local journal to the experiment folder in its bucket (see OptunaStudy)."""
    if study is None or study.remote is None or not Path(study.spec).exists():
        return
    try:
        pafs.copy_files(study.spec, study.remote, destination_filesystem=study.fs)
    except OSError as e:  # the tables still get written; the journal stays on this machine
        print(f"run_search.py: could not copy the Optuna journal to {study.remote} ({e}); it is at {study.spec}")
