import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def run_search(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """run_search.py in its own process, as a user runs it: Ray is process-global state."""
    return subprocess.run(
        [sys.executable, str(PROJECT / "run_search.py"), *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def search():
    return run_search


@pytest.fixture
def isolated_registry():
    """Registries as they were before the test: entries a test (or a plugin it loads) registers, and the
    plugin modules it imports, are gone afterwards."""
    from search_spaces import SPACES
    from trainables import registry

    registry.load_built_ins()
    tables = (registry.MODELS, registry.DATASETS, registry.KNOBS, SPACES)
    saved = [dict(t) for t in tables]
    modules = set(sys.modules)
    yield registry
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:
        if not name.startswith(("trainables", "search_spaces", "analysis", "keras", "tensorflow")):
            sys.modules.pop(name, None)
