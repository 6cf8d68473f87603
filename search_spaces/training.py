"""The training recipe that current practice tunes on small CNNs: SGD with momentum (Nesterov or not)
and weight decay, or Adam; a learning-rate schedule with warm-up; label smoothing. One function that
the `basenet` and `convnet` spaces share, so both sample each knob exactly alike.

Ranges, and why:
- learning_rate 1e-3..0.3 (log): wide enough for the usual SGD-with-momentum settings (the ResNet
  recipe's 0.1 at batch 128) and Adam's (its default 1e-3); the reference's 0.01 is inside. The BaseNet
  search of benchmarks/README.md ("Issue 19") settled at 0.02-0.04, batch 64.
- momentum 0.8..0.95: below 0.8 is close to plain SGD (the reference, whose cell is not the goal
  here); above 0.95 needs a far smaller rate. nesterov: both; it is cheap to ask.
- weight_decay 1e-5..1e-2 (log), SGD only: Keras' decoupled decay is applied as lr * wd per step,
  which for SGD equals an L2 penalty of wd/2 (the 5e-4 of CIFAR recipes sits inside). Adam trials get
  none: its useful range under Keras' lr-scaled decay is two decades higher, and one Optuna parameter
  keeps one range.
- batch_size 32..256: the study used 32; larger batches are what a schedule with warm-up exists for,
  and an epoch of them costs less on a CPU.
- lr_schedule constant | cosine | step, warmup_epochs 0..3 (of 30: at most a tenth of the budget).
- label_smoothing 0..0.2: around the usual 0.1 (Szegedy et al.); with 25 classes a larger value leaves
  the true class little more weight than the rest.
"""

from __future__ import annotations

import optuna

from trainables.config import LR_SCHEDULES

BATCH_SIZES = (32, 64, 128, 256)
# What population-based training may change mid-run (--scheduler pbt), within the ranges above: the
# optimizer's own numbers, which a checkpoint's weights stay valid under.
PERTURBABLE = ("learning_rate", "momentum", "weight_decay")
MAX_WARMUP_EPOCHS = 3


def define_recipe(trial: optuna.Trial) -> None:
    """optimizer (momentum, nesterov and weight_decay under SGD), learning_rate, batch_size,
    lr_schedule (warmup_epochs under cosine and step) and label_smoothing."""
    if trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd":
        trial.suggest_float("momentum", 0.8, 0.95)
        trial.suggest_categorical("nesterov", [False, True])
        trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
    trial.suggest_float("learning_rate", 1e-3, 0.3, log=True)
    trial.suggest_categorical("batch_size", BATCH_SIZES)
    if trial.suggest_categorical("lr_schedule", LR_SCHEDULES) != "constant":
        trial.suggest_int("warmup_epochs", 0, MAX_WARMUP_EPOCHS)
    trial.suggest_float("label_smoothing", 0.0, 0.2)
