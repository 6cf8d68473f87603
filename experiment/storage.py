"""One way to reach an experiment folder, local or remote (s3://, gs://), via pyarrow.fs."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

EXPERIMENT_FILE = "experiment.json"


def is_uri(path: str) -> bool:
    return "://" in str(path)


def resolve(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it). Local paths become absolute; URIs keep their scheme's filesystem."""
    text = str(path)
    if is_uri(text):
        fs, inner = pafs.FileSystem.from_uri(text)
        return fs, inner.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8", errors="replace")


@contextmanager
def replaced_atomically(fs: pafs.FileSystem, path: str) -> Iterator[str]:
    """Yields a temp path beside `path` to write; renamed onto `path` when the block succeeds, removed when
    it fails. Readers never see half a file, and a crash (or a full disk) mid-write leaves the previous
    file intact. The one atomic write of the project: text files and Parquet tables alike."""
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.tmp"
    with removed_on_failure(fs, tmp):
        yield tmp
    fs.move(tmp, path)


def write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    with replaced_atomically(fs, path) as tmp, fs.open_output_stream(tmp) as f:
        f.write(text.encode("utf-8"))


@contextmanager
def removed_on_failure(fs: pafs.FileSystem, tmp: str) -> Iterator[None]:
    """A temp file a failed write (a full disk) leaves half-written is removed: it holds space and nothing
    readable; the file it was to replace is untouched."""
    try:
        yield
    except BaseException:
        with suppress(OSError):
            fs.delete_file(tmp)
        raise


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    return json.loads(read_text(fs, path))


def list_dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    if not exists(fs, path):
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(i.path for i in infos if i.type == pafs.FileType.Directory)
