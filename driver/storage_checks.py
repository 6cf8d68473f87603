"""Where an experiment lands: --name, --storage-path and --s3-endpoint, checked before anything is written.

A refused name, an unwritable folder or a malformed endpoint is a one-line usage error; nothing here
writes under --storage-path (the write probe removes its folder again).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from experiment import storage
from experiment.errors import UsageError

# An experiment name is one folder (one key prefix) inside --storage-path: no separator, no '..', only
# characters that a folder and an S3 key both hold without escaping.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_name(name: str | None) -> None:
    """--name must stay inside --storage-path: refused before anything is written."""
    if name is None or (NAME_PATTERN.fullmatch(name) and ".." not in name):
        return
    if "/" in name or "\\" in name or os.sep in name:
        why = "has a path separator"
    elif ".." in name:
        why = "has '..'"
    else:
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        why = f"has characters a folder or bucket key cannot hold plainly ({' '.join(map(repr, bad))})" if bad else ""
        why = why or ("is too long" if len(name) > 200 else "must start with a letter or digit")
    raise UsageError(
        f"--name {name!r} {why}: an experiment name is one folder inside --storage-path, made of letters, "
        "digits, '.', '_' and '-' (at most 200, starting with a letter or digit, no '..'), e.g. --name lr-sweep-2"
    )


def check_storage_writable(storage_path: str) -> None:
    """Fail before anything starts when --storage-path cannot hold an experiment (local paths;
    a bucket's permissions show on its first write). The probe folder is removed again."""
    if storage.is_uri(storage_path):
        return
    probe = Path(storage_path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(
            f"--storage-path {storage_path}: {probe} is a file, not a folder; "
            "point --storage-path at a folder you can write to"
        )
    try:
        tempfile.TemporaryDirectory(dir=probe, prefix=".write-probe-").cleanup()
    except OSError as e:
        raise UsageError(
            f"--storage-path {storage_path} is not writable: cannot create a folder in {probe} "
            f"({e.strerror or e}); point --storage-path at a folder you can write to"
        ) from None


def check_s3_endpoint(storage_path: str, s3_endpoint: str | None) -> None:
    if s3_endpoint is None:
        return
    if not str(storage_path).startswith("s3://"):
        raise UsageError(f"--s3-endpoint needs an s3:// --storage-path, got {storage_path!r}")
    if not s3_endpoint.startswith(("http://", "https://")):
        raise UsageError(f"--s3-endpoint must be an http:// or https:// URL, got {s3_endpoint!r}")


def use_s3_endpoint(storage_path: str, s3_endpoint: str | None) -> None:
    """Point pyarrow.fs (ours and Ray Tune's) at a non-AWS S3 store through the AWS SDK's own variable,
    which trial workers of an embedded Ray inherit and a cluster's get through the runtime env (the SDK
    reads no other setting, so the variable must carry it)."""
    check_s3_endpoint(storage_path, s3_endpoint)
    if s3_endpoint is not None:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
