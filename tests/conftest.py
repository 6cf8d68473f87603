import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def run_search(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """run_search.py in its own process, as a user runs it: Ray is process-global state."""
    return subprocess.run([sys.executable, str(PROJECT / "run_search.py"), *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def search():
    return run_search
