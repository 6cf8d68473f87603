"""Learning-rate schedules over a trial's budget, as Keras schedules of the optimizer's step counter.

- `constant`: `learning_rate` throughout (the reference study's).
- `cosine`: after the warm-up, half a cosine from `learning_rate` down to 0 at the last step
  (Loshchilov & Hutter's SGDR without restarts: what current CIFAR recipes use).
- `step`: after the warm-up, `learning_rate`, then x0.1 from half the budget and x0.01 from three
  quarters (the ResNet-on-CIFAR recipe of He et al., with milestones as fractions of the budget so a
  30-epoch trial decays at epochs 15 and 22).

Warm-up (`warmup_epochs`, cosine and step only): a linear ramp over the first warm-up steps, from
learning_rate / warmup_steps at step 1 to learning_rate at the end of the ramp (Goyal et al.); cut
to max_epochs - 1 epochs when longer, so a short search's schedule still decays.

The schedule is a function of `optimizer.iterations`, which `model.save` writes with the optimizer
state: a trial restored from a checkpoint continues its schedule where it stopped, not from the start.
The schedule class is registered with Keras' serialization, so `keras.models.load_model` rebuilds it.
"""

from __future__ import annotations

import math
from typing import Any

import keras

STEP_MILESTONES = (0.5, 0.75)  # fractions of the budget after which the step schedule divides by 10
STEP_FACTOR = 0.1


@keras.saving.register_keras_serializable(package="keras_hpo")
class BudgetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`kind` (cosine | step) over `total_steps` optimizer steps, after `warmup_steps` of linear ramp.

    Step k (0-based, the value of optimizer.iterations when the update is made) gets:
    warm-up, k < W: lr * (k + 1) / W; then with progress p = (k - W) / (T - W) in [0, 1]:
    cosine: lr * (1 + cos(pi * p)) / 2; step: lr * 0.1 ** (number of milestones m with p >= m)."""

    def __init__(self, kind: str, learning_rate: float, total_steps: int, warmup_steps: int = 0) -> None:
        if kind not in ("cosine", "step"):
            raise ValueError(f"BudgetSchedule kind must be cosine or step, got {kind!r}")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        k = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.learning_rate, "float32")
        decay_steps = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((k - self.warmup_steps) / decay_steps, 0.0, 1.0)
        if self.kind == "cosine":
            decayed = lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            passed = sum(ops.cast(progress >= m, "float32") for m in STEP_MILESTONES)
            decayed = lr * ops.power(STEP_FACTOR, passed)
        if not self.warmup_steps:
            return decayed
        ramp = lr * (k + 1.0) / float(self.warmup_steps)
        return ops.where(k < self.warmup_steps, ramp, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def learning_rate(config: Any, steps_per_epoch: int) -> float | BudgetSchedule:
    """What the optimizer of `config` (a TrialConfig) gets as its learning rate: the float itself for
    `constant` (so a reference cell's optimizer is exactly the study's), else a BudgetSchedule over
    max_epochs * steps_per_epoch steps."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return BudgetSchedule(
        config.lr_schedule,
        config.learning_rate,
        total_steps=config.max_epochs * steps_per_epoch,
        warmup_steps=min(config.warmup_epochs, config.max_epochs - 1) * steps_per_epoch,
    )
