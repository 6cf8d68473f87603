"""Each trial's knob schedule from the epochs table (population-based training changes knobs mid-run)."""

import pandas as pd

from analysis.knob_changes import schedule_markdown, schedules


def epochs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["a"] * 4 + ["b"] * 2,
            "epoch": [1, 2, 3, 4, 1, 2],
            "set_learning_rate": [0.1, 0.1, 0.12, 0.096, 0.5, 0.5],
            "set_momentum": [None] * 6,
            "set_weight_decay": [0.0] * 6,
        }
    )


def test_only_knobs_that_changed_are_a_schedule():
    table = schedules(epochs())
    assert table.values.tolist() == [
        ["a", "learning_rate", 1, 2, 0.1],
        ["a", "learning_rate", 3, 3, 0.12],
        ["a", "learning_rate", 4, 4, 0.096],
    ]


def test_the_report_section_lists_each_changed_trial_and_is_empty_without_changes():
    text = schedule_markdown(epochs())
    assert "`a` learning_rate: 0.1 (epochs 1-2) -> 0.12 (epoch 3) -> 0.096 (epoch 4)" in text
    assert "`b`" not in text
    assert schedule_markdown(epochs()[epochs()["trial_id"] == "b"]) == ""
