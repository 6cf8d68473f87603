"""Tune's experiment snapshot on a local storage path, copied so that its state files appear whole or not at all.

Tune writes its experiment snapshot (experiment_state-*.json, search_gen_state-*.json, searcher-state-*.pkl,
the callbacks' state) into a staging folder on the driver and then copies that folder to the storage path,
in a background thread, with one pyarrow copy_files, which writes each destination file in place. A driver
killed mid-copy (SIGKILL, the OOM killer, a lost head node) leaves a file there cut short: an empty
search_gen_state-*.json was seen. Tune's resume then fails to read it, logs "Restarting experiment" and runs
the phase's trials afresh beside the old ones: the searcher and every result so far are lost to the run.

`AtomicStateSyncer` is Tune's own syncer (`_FilesystemSyncer`, Ray 2.60) with another upload: the folders of
the staging folder (a trial's: result.json, params.json) are copied as Tune copies them, in one copy_files
(through a folder of links to them), then each file at its top (the state files) is copied under a
temporary name beside its destination and renamed onto it (a rename within one local filesystem is atomic
on POSIX). A kill mid-copy leaves the previous snapshot's state files
whole (and a `.<name>.partial` file that no pattern of Tune's matches), and the trials' folders are copied
before the state that names them. Only the driver's snapshot takes this path: the trials' checkpoints are
registered by Tune only once their copy has finished, and a bucket (s3://, gs://) replaces each object whole
by itself, so both keep Tune's upload. `tuning.snapshots.install` puts the syncer on every controller's storage.

A resume of a phase whose newest state an earlier version left cut short is refused (`cut_short_state`).
"""

from __future__ import annotations

import io
import json
import os
import pickletools
from typing import Any

import pyarrow.fs as pafs
from ray.train._internal.storage import _FilesystemSyncer, _upload_to_fs_path

PARTIAL_SUFFIX = ".partial"
LINKS_SUFFIX = ".links"  # the folder of links beside the driver's staging folder (upload_atomically)


def upload_atomically(local_path: str, fs: pafs.FileSystem, fs_path: str, exclude: list[str] | None = None) -> None:
    """Tune's `_upload_to_fs_path(local_path, fs, fs_path, exclude)` for the driver's staging folder on a local
    storage: the folders first, as Tune copies them, then each top-level file renamed into place (module
    docstring). Anything else (a bucket, an exclusion, a single file) is Tune's own upload."""
    local = pafs.LocalFileSystem()
    if (
        exclude
        or not isinstance(fs, pafs.LocalFileSystem)
        or local.get_file_info(local_path).type != pafs.FileType.Directory
    ):
        _upload_to_fs_path(local_path, fs, fs_path, exclude=exclude)
        return
    fs.create_dir(fs_path, recursive=True)
    entries = local.get_file_info(pafs.FileSelector(local_path))
    # The folders in one copy_files, as Tune copies them (with its thread pool: a copy per folder took 1.5x to
    # 4x as long), through a folder of links to them beside the staging folder (copy_files follows a link to a
    # folder and writes real files). The links are kept from one snapshot to the next: a link costs ~50 us,
    # so only the trials new since the last snapshot get one.
    links = local_path.rstrip("/") + LINKS_SUFFIX
    os.makedirs(links, exist_ok=True)
    linked = set(os.listdir(links))
    folders = {e.base_name: e.path for e in entries if e.type == pafs.FileType.Directory}
    for name in linked - folders.keys():
        os.unlink(os.path.join(links, name))
    for name in folders.keys() - linked:
        os.symlink(folders[name], os.path.join(links, name))
    pafs.copy_files(links, fs_path, local, fs)
    for entry in entries:
        # (a temporary file a killed upload left, brought back by a resume's download, is not copied again)
        if entry.type == pafs.FileType.File and not entry.base_name.endswith(PARTIAL_SUFFIX):
            tmp = f"{fs_path}/.{entry.base_name}{PARTIAL_SUFFIX}"
            pafs.copy_files(entry.path, tmp, local, fs)
            fs.move(tmp, f"{fs_path}/{entry.base_name}")


class AtomicStateSyncer(_FilesystemSyncer):
    """Tune's syncer, uploading with `upload_atomically`."""

    def _sync_up_command(self, local_path: str, uri: str, exclude: list | None = None) -> tuple[Any, dict]:
        return upload_atomically, {
            "local_path": local_path,
            "fs": self.storage_filesystem,
            "fs_path": uri,
            "exclude": exclude,
        }


def use_atomic_state_sync(storage: Any) -> None:
    """Give Tune's StorageContext `storage` (the driver's) the AtomicStateSyncer, with its own syncer's
    settings; idempotent."""
    if isinstance(storage.syncer, AtomicStateSyncer):
        return
    old = storage.syncer
    storage.syncer = AtomicStateSyncer(
        storage_filesystem=storage.storage_filesystem, sync_period=old.sync_period, sync_timeout=old.sync_timeout
    )


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
