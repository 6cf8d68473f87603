"""Learning-rate schedules: values at chosen steps against a hand computation, and a restored model
continuing its schedule where it stopped."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from ray import tune

from trainables import schedules
from trainables.architectures import build_optimizer
from trainables.callbacks import CHECKPOINT_MODEL, CHECKPOINT_STATE
from trainables.config import TrialConfig
from trainables.trainable import _restore


def lr_at(schedule, step: int) -> float:
    return float(np.asarray(schedule(step)))


def test_constant_is_the_float_itself_so_reference_optimizers_are_unchanged():
    config = TrialConfig(model="basenet", learning_rate=0.01)
    assert schedules.learning_rate(config, steps_per_epoch=352) == 0.01
    assert float(np.asarray(build_optimizer(config, 352).learning_rate)) == pytest.approx(0.01)


@pytest.mark.parametrize("step", [0, 1, 25, 50, 75, 99, 100, 140])
def test_cosine_without_warmup_is_half_a_cosine_down_to_zero(step):
    # 10 epochs x 10 steps: lr(k) = 0.1 * (1 + cos(pi * k / 100)) / 2, and 0 from the last step on.
    config = TrialConfig(model="basenet", learning_rate=0.1, lr_schedule="cosine", max_epochs=10)
    schedule = schedules.learning_rate(config, steps_per_epoch=10)
    expected = 0.1 * (1 + math.cos(math.pi * min(step, 100) / 100)) / 2
    assert lr_at(schedule, step) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.2 * 1 / 20),  # the ramp: lr * (k + 1) / W, W = 2 epochs x 10 steps
        (9, 0.2 * 10 / 20),
        (19, 0.2),
        (20, 0.2),  # the decay starts at the top: progress 0
        (60, 0.2 * (1 + math.cos(math.pi * 40 / 80)) / 2),  # progress (60 - 20) / 80 = 1/2: lr / 2
        (80, 0.2 * (1 + math.cos(math.pi * 60 / 80)) / 2),
    ],
)
def test_cosine_with_warmup_ramps_linearly_then_decays_over_the_rest(step, expected):
    config = TrialConfig(model="basenet", learning_rate=0.2, lr_schedule="cosine", warmup_epochs=2, max_epochs=10)
    assert lr_at(schedules.learning_rate(config, 10), step) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.1), (149, 0.1), (150, 0.01), (224, 0.01), (225, 0.001), (299, 0.001)],
)
def test_step_divides_by_ten_at_half_and_three_quarters_of_the_budget(step, expected):
    # 30 epochs x 10 steps: milestones at steps 150 (epoch 15) and 225 (epoch 22.5).
    config = TrialConfig(model="basenet", learning_rate=0.1, lr_schedule="step", max_epochs=30)
    assert lr_at(schedules.learning_rate(config, 10), step) == pytest.approx(expected, rel=1e-6)


def test_step_with_warmup_counts_its_milestones_after_the_ramp():
    # W = 20 steps, decay over 280: milestones at 20 + 140 = 160 and 20 + 210 = 230.
    config = TrialConfig(model="basenet", learning_rate=0.1, lr_schedule="step", warmup_epochs=2, max_epochs=30)
    schedule = schedules.learning_rate(config, 10)
    assert [lr_at(schedule, k) for k in (4, 159, 160, 229, 230)] == pytest.approx([0.025, 0.1, 0.01, 0.01, 0.001])


def test_a_warmup_longer_than_the_budget_is_cut_to_leave_one_epoch_of_decay():
    config = TrialConfig(model="basenet", learning_rate=0.1, lr_schedule="cosine", warmup_epochs=3, max_epochs=2)
    schedule = schedules.learning_rate(config, 10)
    assert schedule.warmup_steps == 10 and schedule.total_steps == 20
    assert lr_at(schedule, 9) == pytest.approx(0.1) and lr_at(schedule, 15) == pytest.approx(0.05)


def tiny_model(config: TrialConfig, steps_per_epoch: int) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=build_optimizer(config, steps_per_epoch), loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("kind", ["cosine", "step"])
def test_a_restored_trial_continues_its_schedule_from_its_position(kind, tmp_path):
    """The checkpoint the trial writes (model.keras + state.json), read back by the trainable's own
    restore: the optimizer's step counter and so the learning rate continue, not restart."""
    config = TrialConfig(
        model="basenet", learning_rate=0.1, lr_schedule=kind, warmup_epochs=1, max_epochs=4, momentum=0.9
    )
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 4)).astype("float32"), rng.integers(0, 3, 50)
    model = tiny_model(config, steps_per_epoch=5)
    model.fit(x, y, batch_size=10, epochs=3, verbose=0)  # 15 steps: past the warm-up and, for step, a milestone
    expected = lr_at(schedules.learning_rate(config, 5), 15)
    model.save(tmp_path / CHECKPOINT_MODEL)
    (tmp_path / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 3, "seed": 0}))

    restored, epoch = _restore(tune.Checkpoint.from_directory(str(tmp_path)))
    assert epoch == 3 and int(restored.optimizer.iterations) == 15
    assert float(np.asarray(restored.optimizer.learning_rate)) == pytest.approx(expected)
    assert expected < 0.1  # the schedule has moved: a restart would read lr 0.1 / 5 at its step 0
    restored.fit(x, y, batch_size=10, epochs=4, initial_epoch=3, verbose=0)
    assert int(restored.optimizer.iterations) == 20
    assert float(np.asarray(restored.optimizer.learning_rate)) == pytest.approx(
        lr_at(schedules.learning_rate(config, 5), 20)
    )
