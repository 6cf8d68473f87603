"""The command line end to end: exit codes, messages, and the tables of a real search."""

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.tables import EPOCHS_SCHEMA, TRIALS_SCHEMA

DESIGN_TRIAL_COLUMNS = [
    "experiment",
    "space",
    "phase",
    "trial_id",
    "status",
    "dataset",
    "seed",
    "model",
    "bn_position",
    "optimizer",
    "learning_rate",
    "batch_size",
    "augmentation",
    "transfer_mode",
    "depth",
    "epochs_completed",
    "stopped_early",
    "best_val_accuracy",
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "train_time_s",
    "node",
    "gpus",
    "started_at",
    "ended_at",
    "error",
    "git_sha",
    "tensorflow_version",
    "keras_version",
    "ray_version",
    "optuna_version",
]
COST_COLUMNS = [
    "param_count",
    "macs_per_image",
    "inference_s_per_image_b1",
    "inference_s_per_image_large",
    "inference_large_batch",
    "inference_device",
]
DESIGN_EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_time_s",
    "set_learning_rate",
    "set_momentum",
    "set_weight_decay",
]


def test_unknown_space_exits_2_listing_the_known_ones(search, tmp_path):
    out = search("--space", "nope", "--storage-path", str(tmp_path))
    assert out.returncode == 2
    assert "'nope' is unknown" in out.stderr and "batchnorm" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert list(tmp_path.iterdir()) == []


def test_negative_checkpoint_flags_exit_2_before_anything_is_written(search, tmp_path):
    out = search("--space", "batchnorm", "--keep-checkpoints", "-1", "--storage-path", str(tmp_path))
    assert out.returncode == 2 and "--keep-checkpoints must be >= 0" in out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_unavailable_dataset_exits_2_naming_the_fix(search, tmp_path):
    out = search(
        "--space",
        "batchnorm",
        "--dataset",
        "cifar100_25",
        "--data-dir",
        str(tmp_path / "none"),
        "--storage-path",
        str(tmp_path / "res"),
    )
    assert out.returncode == 2
    assert "--data-dir" in out.stderr and "--dataset digits" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"objective": "val_accuracy,flops"}, "unknown metric 'flops'"),
        ({"objective": "param_count"}, "the first objective must be val_accuracy:max"),
        ({"objective": "val_accuracy,param_count:up"}, "must end in :min or :max"),
        ({"objective": "val_accuracy,param_count,param_count"}, "names a metric twice"),
        ({"optuna_storage": "optuna.db"}, "expected an RDB URL such as sqlite:///"),
        ({"optuna_storage": "nodb://x/y"}, "--optuna-storage nodb://x/y: cannot open it"),
        ({"search": "grid", "optuna_storage": "sqlite:///o.db"}, "--search grid asks Optuna nothing"),
    ],
)
def test_bad_objectives_and_optuna_storages_are_usage_errors(tmp_path, flags, message):
    import driver
    from driver.request import Request, check_study_flags, objectives
    from experiment import folder
    from tuning.study import open_study

    args = Request(**{"objective": "val_accuracy", **flags})
    exp = folder.locate(str(tmp_path), "x")
    with pytest.raises(driver.UsageError, match=re.escape(message)):
        objectives(args.objective)
        check_study_flags(args)
        open_study(exp, args.optuna_storage, args.resume)
    assert list(tmp_path.iterdir()) == []


def test_objectives_default_to_each_metrics_direction():
    from driver.request import objectives

    goals = objectives("val_accuracy, param_count,inference_s_per_image_b1:max")
    assert goals == [("val_accuracy", "max"), ("param_count", "min"), ("inference_s_per_image_b1", "max")]


def test_an_optuna_storage_holding_the_experiments_study_is_refused_unless_resuming(search, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="x", storage=url)
    out = search("--space", "basenet", "--dataset", "digits", "--storage-path", str(tmp_path / "res"),
                 "--name", "x", "--optuna-storage", url)  # fmt: skip
    assert out.returncode == 2 and "already holds a study 'x'; pick another --name" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "res").exists()


@pytest.mark.slow
def test_batchnorm_search_on_digits_writes_the_design_tables(search, tmp_path):
    out = search(
        "--space",
        "batchnorm",
        "--dataset",
        "digits",
        "--num-samples",
        "6",
        "--max-epochs",
        "3",
        "--objective",  # accuracy against size: BN adds weights, the ConvNet many more than BaseNet
        "val_accuracy,param_count",
        "--storage-path",
        str(tmp_path),
        "--name",
        "x",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = tmp_path / "x" / "tables"
    trials = pd.read_parquet(tables / "trials.parquet")
    epochs = pd.read_parquet(tables / "epochs.parquet")

    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(DESIGN_TRIAL_COLUMNS) <= set(trials.columns)
    assert list(epochs.columns) == DESIGN_EPOCH_COLUMNS
    assert pq.read_schema(tables / "trials.parquet").equals(TRIALS_SCHEMA, check_metadata=False)
    assert pq.read_schema(tables / "epochs.parquet").equals(EPOCHS_SCHEMA, check_metadata=False)
    assert pq.read_schema(tables / "trials.parquet").metadata[b"schema_version"] == b"3"

    # Exactly one row per reported epoch, numbered 1..epochs_completed without gaps.
    assert len(epochs) == trials["epochs_completed"].sum()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, n in zip(trials["trial_id"], trials["epochs_completed"], strict=True):
        assert sorted(epochs.loc[epochs["trial_id"] == trial_id, "epoch"]) == list(range(1, n + 1))

    assert trials[["experiment", "space", "phase", "dataset"]].iloc[0].tolist() == [
        "x",
        "batchnorm",
        "search",
        "digits",
    ]
    assert (trials["seed"] == 0).all() and set(trials["model"]) <= {"basenet", "convnet"}
    assert set(trials["bn_position"]) <= {"none", "before_relu", "after_relu"}
    # Knobs a trial did not read are null, never their defaults (docs/design.md, "The tables").
    basenet, convnet = trials[trials["model"] == "basenet"], trials[trials["model"] == "convnet"]
    for knob in ("depth", "base_width", "kernel_size", "pool_after", "dense_units"):
        assert basenet[knob].isna().all() and convnet[knob].notna().all(), knob
    adam, sgd = trials[trials["optimizer"] == "adam"], trials[trials["optimizer"] == "sgd"]
    assert adam["momentum"].isna().all() and adam["nesterov"].isna().all()
    assert sgd["momentum"].notna().all()
    assert trials[["flip", "zoom_range", "zca_epsilon", "transfer_mode", "head_units"]].isna().all().all()
    stopped = trials[trials["stopped_early"]]
    full = trials[trials["epochs_completed"] == 3]
    assert (stopped["epochs_completed"] < 3).all() and stopped["test_accuracy"].isna().all()
    assert (stopped["status"] == "stopped").all()
    assert full["test_accuracy"].between(0, 1).all() and (full["status"] == "completed").all()
    assert len(stopped) + len(full) == 6
    assert trials["error"].isna().all() and trials["node"].notna().all()
    assert (trials["tensorflow_version"].str.len() > 0).all()
    assert "best trial" in out.stdout and str(tables) in out.stdout

    # Cost in every row, from the model each trial built.
    assert trials[COST_COLUMNS].notna().all().all()
    # BaseNet on digits (32x32x3, 10 classes): the hand count of tests/trainables/test_cost.py less 15 x 50
    # for the smaller output layer, plus 6,304 with a BatchNorm per conv.
    basenet_macs = {"none": 613_300, "before_relu": 619_604, "after_relu": 619_604}
    for row in trials[trials["model"] == "basenet"].itertuples():
        assert row.macs_per_image == basenet_macs[row.bn_position], row.trial_id
    assert (trials["inference_s_per_image_large"] > 0).all() and (trials["inference_large_batch"] == 32).all()
    assert trials["inference_device"].str.startswith("CPU").all()
    assert_tensorboard_has_every_epoch_and_the_knobs(tmp_path / "x" / "search", epochs)
    assert_pareto_front_is_undominated(tmp_path / "x", trials)


def assert_pareto_front_is_undominated(exp: Path, trials: pd.DataFrame) -> None:
    """Two objectives: the report's Pareto table and figure; no listed configuration is dominated by
    another full-budget trial (as accurate or more, as small or smaller, better in one); the study the
    searcher told is multi-objective with one value per objective for each full-budget trial."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    front = pd.read_parquet(exp / "report" / "pareto.parquet")
    assert (exp / "report" / "pareto_front.png").stat().st_size > 10_000
    assert "## Pareto front" in (exp / "report" / "report.md").read_text()
    full = trials[(trials["status"] == "completed") & (trials["epochs_completed"] == 3)]
    assert len(front) >= 1 and set(front["trial_id"]) <= set(full["trial_id"])
    # The accuracy objective is each trial's best epoch (one number per trial: Optuna, ASHA, the report).
    for row in front.itertuples():
        others = full[full["trial_id"] != row.trial_id]
        dominating = others[
            (others["best_val_accuracy"] >= row.val_accuracy)
            & (others["param_count"] <= row.param_count)
            & ((others["best_val_accuracy"] > row.val_accuracy) | (others["param_count"] < row.param_count))
        ]
        assert dominating.empty, (row.trial_id, dominating["trial_id"].tolist())
    # Every full-budget trial nothing dominates is listed.
    for row in full.itertuples():
        beaten = (
            (full["best_val_accuracy"] >= row.best_val_accuracy)
            & (full["param_count"] <= row.param_count)
            & ((full["best_val_accuracy"] > row.best_val_accuracy) | (full["param_count"] < row.param_count))
        ).any()
        assert beaten != (row.trial_id in set(front["trial_id"])), row.trial_id
    study = optuna.load_study(study_name="x", storage=JournalStorage(JournalFileBackend(str(exp / "optuna.journal"))))
    assert len(study.directions) == 2
    told = {t.user_attrs["trial_id"]: t for t in study.trials}
    for row in full.itertuples():
        assert told[row.trial_id].values == pytest.approx([row.best_val_accuracy, row.param_count])


def assert_tensorboard_has_every_epoch_and_the_knobs(search_dir: Path, epochs: pd.DataFrame) -> None:
    """Ray Tune's TensorBoard event files, read with TensorBoard's own reader: every epoch's val_accuracy
    as a scalar, and the trial's knobs as hparams (written when the trial ends)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    folders = [p.parent for p in search_dir.glob("*/params.json")]
    assert len(folders) == epochs["trial_id"].nunique()
    for folder in folders:
        assert list(folder.glob("events.out.tfevents.*")), folder
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        reported = epochs[epochs["trial_id"] == folder.name].set_index("epoch")["val_accuracy"]
        logged = {e.step: e.value for e in acc.Scalars("ray/tune/val_accuracy")}
        assert sorted(logged) == sorted(reported.index), folder.name  # one point per epoch
        for epoch, value in logged.items():
            assert value == pytest.approx(reported[epoch], abs=1e-6)
        assert "ray/tune/param_count" in acc.Tags()["scalars"]
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        ).session_start_info
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        params = json.loads((folder / "params.json").read_text())
        # The knobs the space set for the trial (sampled and fixed); the rest kept TrialConfig's defaults.
        for knob in ("model", "bn_position", "optimizer", "learning_rate", "dataset", "seed", "max_epochs"):
            assert knob in params and hparams[knob] == params[knob], (folder.name, knob)
