"""--warm-start's configurations replayed through a space's define-by-run: the points queued, and the
refusals that name the knob."""

import pandas as pd
import pytest

from search_spaces import SPACES
from tuning.warm_start import as_point, best_rows, warm_points

SGD = {
    "model": "basenet",
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-4,
    "learning_rate": 0.03,
    "batch_size": 64,
    "lr_schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "bn_position": "after_relu",
    "augmentation": "crop_flip",
}


def test_a_trials_knobs_become_the_spaces_parameters_conditional_ones_included():
    point = as_point(SPACES["basenet"], SGD, "first/a_00000")
    assert point.origin == "first/a_00000"
    assert point.params["momentum"] == 0.9 and point.params["warmup_epochs"] == 1
    assert {"model"} & set(point.params) == set()  # fixed by the space, not a parameter
    adam = {k: v for k, v in SGD.items() if k not in ("momentum", "nesterov", "weight_decay")} | {"optimizer": "adam"}
    assert "momentum" not in as_point(SPACES["basenet"], adam, "first/b").params  # asked only under SGD


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"learning_rate": 0.9}, "first/a has learning_rate=0.9, outside space 'basenet'"),
        ({"momentum": None}, "searches knob 'momentum', which first/a did not have"),
        ({"model": "convnet"}, "fixes model='basenet'"),
    ],
)
def test_a_knob_the_space_cannot_take_is_refused_by_name(change, words):
    knobs = {k: v for k, v in {**SGD, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        as_point(SPACES["basenet"], knobs, "first/a")


def test_an_integer_knob_read_back_as_a_float_is_an_integer_again():
    """An int64 column with nulls (warmup_epochs is null under a constant schedule) reads as float64."""
    from tuning.warm_start import known_knobs

    rows = pd.DataFrame([{**SGD, "warmup_epochs": 3}, {**SGD, "lr_schedule": "constant", "warmup_epochs": None}])
    knobs = known_knobs(rows.to_dict("records")[0], list(SGD))
    assert knobs["warmup_epochs"] == 3 and isinstance(knobs["warmup_epochs"], int)
    assert as_point(SPACES["basenet"], knobs, "first/a").params["warmup_epochs"] == 3


def test_the_best_distinct_search_configurations_come_first():
    rows = [
        {
            **SGD,
            "trial_id": "a",
            "phase": "search",
            "status": "completed",
            "epochs_completed": 2,
            "best_val_accuracy": 0.5,
        },
        {
            **SGD,
            "trial_id": "b",
            "phase": "search",
            "status": "completed",
            "epochs_completed": 2,
            "best_val_accuracy": 0.7,
        },
        {
            **SGD,
            "trial_id": "c",
            "phase": "confirm",
            "status": "completed",
            "epochs_completed": 2,
            "best_val_accuracy": 0.9,
        },
        {**SGD, "trial_id": "d", "phase": "search", "status": "error", "epochs_completed": 2, "best_val_accuracy": 0.8},
        {
            **SGD,
            "learning_rate": 0.01,
            "trial_id": "e",
            "phase": "search",
            "status": "stopped",
            "epochs_completed": 1,
            "best_val_accuracy": 0.95,
        },
    ]
    trials = pd.DataFrame(rows)
    assert [r["trial_id"] for r in best_rows(trials, 3)] == ["b", "e"]  # a: the same config as b
    points = warm_points(SPACES["basenet"], {"first": trials}, 1)
    assert [p.origin for p in points] == ["first/b"]
