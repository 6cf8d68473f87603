"""A snippet in a fresh CPU-only Python: TensorFlow takes thread settings only before its runtime starts,
and gc state is per process. Shared by the runtime and trainable tests."""

import os
import subprocess
import sys


def run_fresh_python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh CPU-only Python (TensorFlow takes thread settings only before its runtime
    starts, and gc state is per process); asserts it succeeded."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc
