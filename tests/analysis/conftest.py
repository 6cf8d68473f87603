"""Fixtures of the analysis tests: synthetic experiment folders (see synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import bn_study_rows, write_experiment


@pytest.fixture
def bn_experiment(tmp_path: Path) -> Path:
    return write_experiment(tmp_path / "bn", bn_study_rows())
