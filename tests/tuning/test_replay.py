"""The replay backend: lookups of recorded configurations, and a replayed experiment whose tables
(built by analysis.tables from the trial folders) equal the recorded epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainables.config import TrialConfig
from tuning import replay

KNOBS = [  # (optimizer, learning rate, bn_position): three BaseNet configurations
    ("sgd", 0.01, "none"),
    ("adam", 0.001, "after_relu"),
    ("sgd", 0.1, "before_relu"),
]
EPOCHS = 4


def curve_set() -> pd.DataFrame:
    """Recorded curves in the curve-set schema, with all knob columns as record_curves writes them."""
    rows = []
    for i, (opt, lr, bn) in enumerate(KNOBS):
        knobs = TrialConfig(
            model="basenet",
            dataset="digits",
            max_epochs=EPOCHS,
            optimizer=opt,
            learning_rate=lr,
            bn_position=bn,
            seed=7,
        ).to_row()
        for e in range(1, EPOCHS + 1):
            rows.append(
                {
                    "config_id": f"rec/{i}",
                    "epoch": e,
                    "loss": 2.0 / e + i,
                    "accuracy": 0.1 * e + 0.01 * i,
                    "val_loss": 2.1 / e + i,
                    "val_accuracy": 0.2 + 0.1 * e - 0.03 * i,
                    "epoch_time_s": 0.5 + i,
                    "epoch_learning_rate": lr,
                    "test_accuracy": 0.6 - 0.03 * i,
                    "source": "rec",
                    **knobs,
                }
            )
    return pd.DataFrame(rows)


def crossing_set() -> pd.DataFrame:
    """Eight SGD learning rates whose curves cross: high rates start fast and end low."""
    rows = []
    for i, lr in enumerate(np.logspace(-4, -1, 8)):
        knobs = TrialConfig(
            model="basenet", dataset="digits", max_epochs=EPOCHS, optimizer="sgd", learning_rate=float(lr), seed=7
        ).to_row()
        for e in range(1, EPOCHS + 1):
            val = 0.1 + 0.05 * i + (e - 1) * (0.12 - 0.015 * i) + 0.001 * ((i * 7) % 5)
            rows.append(
                {
                    "config_id": f"lr/{i}",
                    "epoch": e,
                    "loss": 1.0,
                    "accuracy": val,
                    "val_loss": 1.0,
                    "val_accuracy": val,
                    "epoch_time_s": 0.1,
                    "epoch_learning_rate": float(lr),
                    "test_accuracy": val,
                    "source": "lr",
                    **knobs,
                }
            )
    return pd.DataFrame(rows)


def test_nearest_matches_categories_first_then_log_distance() -> None:
    curves = curve_set()
    configs, knobs = replay.configs_of(curves), replay.matched_knobs(curves)
    assert set(knobs) == {"optimizer", "learning_rate", "bn_position"}
    pick = lambda **p: replay.nearest({"model": "basenet", **p}, configs, knobs)  # noqa: E731
    assert pick(optimizer="sgd", learning_rate=0.01, bn_position="none") == "rec/0"
    assert pick(optimizer="sgd", learning_rate=0.05, bn_position="before_relu") == "rec/2"
    # One categorical mismatch beats any learning-rate distance with two.
    assert pick(optimizer="adam", learning_rate=0.1, bn_position="none") in {"rec/0", "rec/1"}
    assert pick(optimizer="adam", learning_rate=0.1, bn_position="after_relu") == "rec/1"
    # Equal log distance from 0.01 and 0.1 among sgd, bn unmatched: the first id wins the tie.
    assert pick(optimizer="sgd", learning_rate=np.sqrt(0.001), bn_position="after_relu") == "rec/0"


def test_load_curves_refuses_other_tables(tmp_path) -> None:
    path = tmp_path / "not_curves.parquet"
    pd.DataFrame({"trial_id": ["a"], "epoch": [1]}).to_parquet(path)
    with pytest.raises(ValueError, match="not a curve set"):
        replay.load_curves(path)


@pytest.mark.slow
def test_replayed_experiment_tables_equal_recorded_epochs(tmp_path) -> None:
    """The recorded configs, run through Tune (FIFO) as fixed points, then through ASHA with the
    production searcher: the tables rebuilt from the trial folders hold exactly the recorded epochs."""
    import ray

    from analysis.tables import export_tables
    from search_spaces import SPACES
    from search_spaces.base import SchedulerSettings

    curves = curve_set()
    configs = [
        {k: row[k] for k in ("model", "optimizer", "learning_rate", "bn_position")}
        for _, row in replay.configs_of(curves).iterrows()
    ]
    # One CPU: one trial at a time, in the order given, so ASHA's decisions below are known.
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        log = replay.run_replay(
            curves,
            SPACES["basenet"],
            searcher="fidelity",
            scheduler="fifo",
            settings=SchedulerSettings(),
            seed=7,
            storage=tmp_path,
            name="fixed",
            num_samples=len(configs),
            configs=configs,
        )
        halving = SchedulerSettings(grace_period=1, reduction_factor=2)  # rungs at epochs 1 and 2 of 4
        replay.run_replay(
            curves,
            SPACES["basenet"],
            searcher="fidelity",
            scheduler="asha",
            settings=halving,
            seed=7,
            storage=tmp_path,
            name="fixed-asha",
            num_samples=3,
            configs=configs,
        )
        tpe_log = replay.run_replay(
            crossing_set(),
            SPACES["basenet"],
            searcher="fidelity",
            scheduler="asha",
            settings=halving,
            seed=7,
            storage=tmp_path,
            name="tpe-asha",
            num_samples=12,
            max_concurrent=1,
        )
    finally:
        ray.shutdown()
    _, trials, epochs = export_tables(tmp_path / "fixed")
    trials, epochs = trials.to_pandas(), epochs.to_pandas()
    assert len(trials) == 3 and (trials["status"] == "completed").all()
    assert sorted(log["config_id"].unique()) == ["rec/0", "rec/1", "rec/2"]
    recorded = curves.set_index(["optimizer", "bn_position"])
    for _, trial in trials.iterrows():
        want = recorded.loc[(trial["optimizer"], trial["bn_position"])].sort_values("epoch")
        got = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        assert list(got["epoch"]) == list(want["epoch"])
        for col in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"):
            assert np.array_equal(got[col].to_numpy(), want[col].to_numpy()), col
        assert np.array_equal(got["learning_rate"].to_numpy(), want["epoch_learning_rate"].to_numpy())
        assert trial["test_accuracy"] == want["test_accuracy"].iloc[-1]
    # ASHA (keep the better half at epoch 1): rec/0 comes first and leads at every epoch, so rec/1 and
    # rec/2, behind the cut-off at epoch 1, stop there with exactly their first recorded epoch.
    _, a_trials, a_epochs = export_tables(tmp_path / "fixed-asha")
    a_trials = a_trials.to_pandas().set_index("bn_position")
    assert a_trials.loc["none", "status"] == "completed"
    assert list(a_trials.loc[["after_relu", "before_relu"], "epochs_completed"]) == [1, 1]
    assert a_trials["stopped_early"].sum() == 2
    # The production TPE searcher picks learning rates the table never saw: each trial's epochs are a
    # prefix of the recorded curve it was matched to.
    _, t_trials, t_epochs = export_tables(tmp_path / "tpe-asha")
    assert len(t_trials) == 12
    crossing = crossing_set()
    for trial_id, got in t_epochs.to_pandas().groupby("trial_id"):
        config_id = log_config(tpe_log, trial_id)
        want = crossing[crossing["config_id"] == config_id].sort_values("epoch").head(len(got))
        assert np.array_equal(got.sort_values("epoch")["val_accuracy"].to_numpy(), want["val_accuracy"].to_numpy())
    # The benchmark's fast engine (no Tune controller) takes Tune's decisions: same configs, same stops.
    sim = replay.simulate(
        crossing,
        SPACES["basenet"],
        searcher="fidelity",
        scheduler="asha",
        settings=halving,
        seed=7,
        num_samples=12,
        workers=1,
    )
    assert trial_story(sim) == trial_story(tpe_log)
    assert trial_story(sim) != [(c, 4) for c, _ in trial_story(sim)]  # ASHA stopped some: not vacuous


def trial_story(log: pd.DataFrame) -> list[tuple[str, int]]:
    """(replayed config, epochs reached) of each trial, in the order trials first reported."""
    order = log.drop_duplicates("trial_id")["trial_id"]
    return [(log_config(log, t), int(log.loc[log["trial_id"] == t, "epoch"].max())) for t in order]


def log_config(log: pd.DataFrame, trial_id: str) -> str:
    ids = log.loc[log["trial_id"] == trial_id, "config_id"].unique()
    assert len(ids) == 1
    return str(ids[0])
