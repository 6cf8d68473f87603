"""Run notebooks/explore_results.ipynb (nbclient, a real kernel) on an experiment folder: shared by the
notebook test and the real-sweep test."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT = Path(__file__).resolve().parents[2]
NOTEBOOK = PROJECT / "notebooks" / "explore_results.ipynb"


def run_notebook(experiment: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Execute the notebook with EXPERIMENT_DIR set; raises CellExecutionError on the first failing cell."""
    monkeypatch.setenv("EXPERIMENT_DIR", str(experiment))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is the kernel ipykernel provides for the interpreter running the tests (the venv's).
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    return nb
