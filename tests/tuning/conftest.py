"""Fixtures of the Tune-side tests."""

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def built_run_config(tmp_path) -> Callable[..., Any]:
    """The RunConfig that tuning.tune_settings.build_tuner gives a Tuner built with these settings (never run)."""
    from tuning import tune_settings

    def build(**settings: Any) -> Any:
        tuner = tune_settings.build_tuner(
            print,  # any function trainable: the Tuner is built, never run
            name="x",
            storage_path=str(tmp_path),
            num_samples=1,
            search_alg=None,
            scheduler=None,
            callbacks=[],
            **settings,
        )
        return tuner._local_tuner.get_run_config()

    return build
