"""Tune's run settings that set what the bookkeeping costs: checkpoints kept, result loggers."""

import pytest
from ray.tune.logger import JsonLoggerCallback, TBXLoggerCallback

from tuning import tune_settings


@pytest.mark.parametrize(("kept", "num_to_keep"), [(2, 2), (5, 5), (0, None)])
def test_kept_checkpoints_map_to_tunes_num_to_keep_and_zero_keeps_all(kept, num_to_keep):
    # None is Tune's "keep every checkpoint": the setting under which it never forces a snapshot.
    assert tune_settings.checkpoint_config(kept).num_to_keep == num_to_keep


def test_default_keeps_two_checkpoints():
    assert tune_settings.checkpoint_config().num_to_keep == tune_settings.CHECKPOINTS_KEPT == 2


def test_result_loggers_are_json_and_tensorboard_with_tunes_automatic_ones_off(monkeypatch):
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    loggers = tune_settings.result_loggers()
    kinds = {type(cb) for cb in loggers}
    assert {JsonLoggerCallback, TBXLoggerCallback} <= kinds
    import os

    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
