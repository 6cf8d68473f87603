"""TensorBoard event files written by the trial's process, read back with TensorBoard's own reader."""

from __future__ import annotations

import math

import numpy as np

from trainables.events import TrialEvents, hparams_of, scalars


def read(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return acc, hparams


def test_each_epoch_is_a_scalar_per_metric_and_the_knobs_are_hparams(tmp_path):
    params = {"model": "basenet", "learning_rate": 0.01, "seed": np.int64(3), "nesterov": True, "shape": [1, 2]}
    events = TrialEvents(params, str(tmp_path))
    for epoch in (1, 2, 3):
        events.write({"epoch": epoch, "val_accuracy": 0.1 * epoch, "loss": math.nan, "pid": 42, "node": "h"}, epoch)
    events.close()
    acc, hparams = read(tmp_path)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("ray/tune/val_accuracy")] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    tags = set(acc.Tags()["scalars"])
    assert "ray/tune/epoch" in tags and "ray/tune/loss" not in tags and "ray/tune/pid" not in tags  # NaN, the pid
    assert hparams == {"model": "basenet", "learning_rate": 0.01, "seed": 3.0, "nesterov": True}


def test_a_reused_worker_closes_the_previous_trials_writer(tmp_path):
    first = TrialEvents({"seed": 0}, str(tmp_path / "a"))
    first.write({"val_accuracy": 0.5}, 1)  # then ASHA stopped it: nothing of the trial ran after its report
    second = TrialEvents({"seed": 1}, str(tmp_path / "b"))
    assert first.closed and TrialEvents._open is second
    second.close()
    assert TrialEvents._open is None


def test_only_numbers_are_scalars_and_only_plain_values_are_hparams():
    assert scalars({"a": 1, "b": np.float32(2.5), "c": True, "d": "x", "e": math.inf}) == {
        "ray/tune/a": 1.0,
        "ray/tune/b": 2.5,
        "ray/tune/e": math.inf,
    }
    assert hparams_of({"a": np.bool_(True), "b": None, "c": {"x": 1}}) == {"a": True, "b": None}
