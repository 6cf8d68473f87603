"""Ray Tune's filesystem for a local `--storage-path`: every file Tune writes there appears whole or not at all.

Tune writes its experiment snapshot (experiment_state-*.json, search_gen_state-*.json, searcher-state-*.pkl,
the callbacks' state) into a staging folder and then copies that folder to the storage path file by file,
in a background thread, with pyarrow's copy_files, which writes each destination file in place. A driver
killed mid-copy (SIGKILL, the OOM killer, a lost node) leaves a file there cut short: an empty
search_gen_state-*.json was seen. Tune's resume then fails to load it, logs "Restarting experiment" and
starts the phase's trials afresh beside the old ones: every result so far is lost to the searcher and run
again.

This filesystem is pyarrow's LocalFileSystem, except that a file opened for writing is written under a
temporary name beside its destination and renamed onto it when closed (os.replace: atomic on POSIX). A kill
mid-write leaves the previous version of the file (or none) plus a `.<name>.<id>.partial` file that no
pattern of Tune's matches. Tune takes a custom filesystem for exactly this (`RunConfig.storage_filesystem`,
and `Tuner.restore(storage_filesystem=...)`, which must be given again on restore); the trials' own writes
(checkpoints) go through it too, as it is pickled with the storage context to each worker.

Bucket storage (s3://, gs://) is left to pyarrow's own filesystems: an object store's upload replaces an
object whole.
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import uuid
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.fs as pafs

PARTIAL_SUFFIX = ".partial"


class RenamedOnClose:
    """A binary file written at a temporary path beside `path` and moved onto `path` by close(); a writer
    that never closes it (killed, or failed mid-copy: pyarrow then drops the stream without closing it)
    leaves `path` as it was."""

    def __init__(self, path: str) -> None:
        self.path = path
        folder, name = os.path.split(path)
        self.tmp = os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed (and renamed) by close()

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self.file.closed

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.close()
        os.replace(self.tmp, self.path)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """pyarrow's LocalFileSystem with atomic output streams (module docstring); everything else delegated."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __hash__(self) -> int:
        return hash(AtomicLocalHandler)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled to the workers with Tune's storage context
        return (AtomicLocalHandler, ())

    def get_type_name(self) -> str:
        return "atomic-local"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root folder")

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self.fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while chunk := source.read(1 << 20):  # 1 MiB at a time
                target.write(chunk)

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(RenamedOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata: dict[str, str] | None) -> pyarrow.NativeFile:
        return self.fs.open_append_stream(path)  # appending is not replacing: Tune's storage never appends


def tune_storage(storage_path: str) -> tuple[str, pafs.FileSystem | None]:
    """(storage path, filesystem) as Tune takes them for `storage_path`: a local path made absolute with
    the atomic filesystem (Tune needs an absolute path beside a custom filesystem); a bucket's URI as it is,
    with None (Tune infers pyarrow's own filesystem from the URI)."""
    if "://" in str(storage_path):
        return str(storage_path), None
    return str(Path(storage_path).expanduser().absolute()), pafs.PyFileSystem(AtomicLocalHandler())


# Tune's state files a resume reads, newest by name (Ray 2.60: TuneController.CKPT_FILE_TMPL, a JSON document;
# SearchGenerator.CKPT_FILE_TMPL, a pickle despite its name). The searcher's own pickle is not among them:
# tuning.optuna_search rebuilds an unreadable one from the Optuna study.
RESUMED_STATE = (("experiment_state-", ".json", "json"), ("search_gen_state-", ".json", "pickle"))


def cut_short_state(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The paths of Tune's newest state files in the phase folder `folder` that are not whole (cut short by
    a driver killed while Tune copied them, before this filesystem wrote them atomically). Tune's resume
    would fail to read one, log "Restarting experiment" and run the phase's trials afresh; the driver
    refuses the resume instead. Checked without running the pickle's code: its opcodes must reach STOP."""
    names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))]
    broken = []
    for prefix, suffix, kind in RESUMED_STATE:
        matching = [n for n in names if n.startswith(prefix) and n.endswith(suffix)]
        if not matching:
            continue
        path = f"{folder}/{max(matching)}"
        with fs.open_input_stream(path) as f:
            data = f.read()
        if not _whole(data, kind):
            broken.append(path)
    return broken


def _whole(data: bytes, kind: str) -> bool:
    try:
        if kind == "json":
            json.loads(data)
        else:
            for _ in pickletools.genops(io.BytesIO(data)):  # raises at the end of a stream cut before STOP
                pass
    except (ValueError, EOFError):  # json's JSONDecodeError and pickletools' errors are ValueErrors
        return False
    return bool(data)
