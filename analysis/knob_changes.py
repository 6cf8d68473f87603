"""The knob schedules trials went through: population-based training (--scheduler pbt) changes a trial's
learning rate, momentum or weight decay mid-run, and epochs.parquet records the values in force at every
epoch (`set_<knob>`). Here they become each trial's schedule, as the report prints it. Pure pandas."""

from __future__ import annotations

import pandas as pd

from trainables.config import PERTURBABLE_KNOBS

COLUMNS = [f"set_{k}" for k in PERTURBABLE_KNOBS]


def schedules(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, knob and stretch of epochs with one value: trial_id, knob, first_epoch,
    last_epoch, value; only for trials whose knob changed at least once."""
    rows = []
    for trial_id, group in epochs.sort_values(["trial_id", "epoch"]).groupby("trial_id", sort=True):
        for column in COLUMNS:
            if column not in group or group[column].isna().all() or group[column].nunique() < 2:
                continue
            knob = column[len("set_") :]
            stretches: list[list[float]] = []  # [first epoch, last epoch, value]
            for epoch, value in zip(group["epoch"], group[column], strict=True):
                if stretches and stretches[-1][2] == value:
                    stretches[-1][1] = int(epoch)
                else:
                    stretches.append([int(epoch), int(epoch), float(value)])
            rows += [(trial_id, knob, int(a), int(b), v) for a, b, v in stretches]
    return pd.DataFrame(rows, columns=["trial_id", "knob", "first_epoch", "last_epoch", "value"])


def schedule_markdown(epochs: pd.DataFrame) -> str:
    """The report's section on knob schedules; empty when no trial's knob changed (no PBT)."""
    table = schedules(epochs)
    if table.empty:
        return ""
    out = [
        "## Knob schedules (population-based training)\n",
        "Each trial whose knobs changed mid-run, with the values in force over its epochs "
        "(epochs.parquet, `set_<knob>`); a change is a restart from a better trial's checkpoint with "
        "its knobs perturbed.\n",
    ]
    for (trial_id, knob), stretch in table.groupby(["trial_id", "knob"], sort=True):
        steps = " -> ".join(
            f"{r.value:.4g} (epoch{'s' if r.first_epoch != r.last_epoch else ''} "
            f"{r.first_epoch}{'' if r.first_epoch == r.last_epoch else f'-{r.last_epoch}'})"
            for r in stretch.itertuples()
        )
        out.append(f"- `{trial_id}` {knob}: {steps}")
    return "\n".join(out) + "\n"
