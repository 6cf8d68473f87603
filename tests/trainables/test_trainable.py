"""The trainable's failure behaviour: a diverged loss and an out-of-memory error each end the trial
with a recorded error and no retry; the restore reseed; the fault plugin's plan."""

import json
from pathlib import Path

import pytest

from analysis.tables import build_tables
from tests import fault_plugin
from trainables.trainable import epoch_seed

FAULT_PLUGIN = Path(fault_plugin.__file__)


def test_epoch_seed_is_the_seed_at_epoch_zero_and_distinct_per_epoch_and_seed():
    assert epoch_seed(7, 0) == 7
    seeds = {epoch_seed(s, e) for s in range(20) for e in range(50)}
    assert len(seeds) == 20 * 50
    assert all(0 <= s < 2**32 for s in seeds) and 0 <= epoch_seed(2**32 - 1, 3) < 2**32


SAVE = """
import json
from pathlib import Path
from trainables.callbacks import CHECKPOINT_MODEL, CHECKPOINT_STATE
from trainables.config import TrialConfig
from trainables.data import load_digits
from trainables.trainable import _compile
knobs = {"label_smoothing": 0.1, "lr_schedule": "cosine", "warmup_epochs": 1}
config = TrialConfig.from_params({"model": "basenet", "dataset": "digits", "max_epochs": 3, **knobs})
folder = Path(FOLDER)
_compile(config, load_digits(), 1000).save(folder / CHECKPOINT_MODEL)
(folder / CHECKPOINT_STATE).write_text(json.dumps({"epoch": 2, "seed": 0}))
"""
RESTORE = """
from ray import tune
from trainables.trainable import _restore
model, epoch = _restore(tune.Checkpoint.from_directory(FOLDER))
print(epoch, type(model.loss).__name__, type(model.optimizer._learning_rate).__name__)
"""


def test_a_fresh_worker_restores_a_checkpoint_with_the_custom_loss_and_schedule(tmp_path):
    """A retried trial's new worker loads the checkpoint before it builds any model: the loss and the
    learning-rate schedule classes must be registered with Keras by then (the chaos test's trials with
    label smoothing or a schedule failed every retry with 'Could not locate class')."""
    from tests.fresh_python import run_fresh_python

    run_fresh_python(SAVE.replace("FOLDER", repr(str(tmp_path))))
    restored = run_fresh_python(RESTORE.replace("FOLDER", repr(str(tmp_path))))
    assert restored.stdout.split() == ["2", "SmoothedSparseCrossentropy", "BudgetSchedule"]


@pytest.mark.parametrize(
    "fault",
    [
        {"at": "mid_epochs", "epoch": 1},  # no such moment
        {"at": "report_done"},  # which epoch?
        {"at": "report_done", "epoch": 2, "do": "oom"},  # TensorFlow raises it while an epoch trains
        {"at": "mid_epoch", "epoch": 2, "do": "explode"},
    ],
)
def test_a_fault_plan_that_names_no_real_moment_is_refused(fault, tmp_path):
    with pytest.raises(ValueError, match="bad fault"):
        fault_plugin.write_plan(tmp_path / "plan.json", [fault])


@pytest.mark.slow
def test_nan_loss_and_out_of_memory_are_recorded_errors_and_the_search_goes_on(tmp_path, monkeypatch):
    """Three trials, one at a time: a learning rate of 1e30 overflows the weights in epoch 1 (the loss
    Keras reports stays finite, as it clips the cross-entropy); the first healthy trial to begin
    epoch 2 gets the out-of-memory error TensorFlow raises (injected by tests/fault_plugin.py as epoch 2 trains,
    through the real except clause); the last one completes."""
    from ray import tune

    base = {
        "model": "convnet",
        "dataset": "digits",
        "max_epochs": 2,
        "depth": 2,
        "pool_after": "2",
        "batch_size": 64,
        "optimizer": "sgd",
    }
    grid = run_with_faults(
        tmp_path,
        monkeypatch,
        [{"at": "mid_epoch", "epoch": 2, "do": "oom"}],
        {**base, "learning_rate": tune.grid_search([1e30, 0.01, 0.02])},
    )
    assert grid.num_errors == 0  # both failures ended their trial cleanly: nothing for Tune to retry
    exp = tmp_path / "exp"
    trials, epochs = (t.to_pandas() for t in build_tables(exp))
    by_lr = trials.set_index("learning_rate")
    assert by_lr.loc[1e30, "status"] == "error"
    assert by_lr.loc[1e30, "error"].startswith("non-finite") and by_lr.loc[1e30, "epochs_completed"] == 1
    oom = trials[trials["error"].fillna("").str.startswith("out of memory")]
    assert len(oom) == 1, trials[["learning_rate", "status", "error"]]
    assert oom.iloc[0]["status"] == "error" and oom.iloc[0]["epochs_completed"] == 1
    assert "ResourceExhaustedError" in oom.iloc[0]["error"]
    healthy = trials[trials["error"].isna()]
    assert list(healthy["status"]) == ["completed"] and list(healthy["epochs_completed"]) == [2]
    # No retry: each trial ran in exactly one worker process.
    for result in (exp / "search").glob("*/result.json"):
        pids = {json.loads(line).get("pid") for line in result.read_text().splitlines()} - {None}
        assert len(pids) <= 1, result
    assert not epochs.duplicated(["trial_id", "epoch"]).any()


@pytest.mark.slow
def test_a_reused_worker_leaks_nothing_between_trials(tmp_path):
    """Config A, then a different config B, then A again (same seed), one at a time through a real
    Tune run with actor reuse: all three run in one worker process, and A gives the same metrics
    first in the worker and after two other trials in it (Keras state, seeds, TensorFlow settings
    and the tf.data shuffle all start over)."""
    import ray
    from ray import tune

    from trainables.data import load_digits
    from trainables.trainable import train_trial
    from tuning.optuna_search import fixed_configs_search

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({"experiment": "exp", "space": "test", "max_epochs": 2}))
    common = {"dataset": "digits", "max_epochs": 2, "seed": 3}
    a = {
        **common,
        "model": "convnet",
        "depth": 2,
        "pool_after": "2",
        "batch_size": 64,
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "bn_position": "after_relu",
    }
    # B differs in everything that could leak: model, BatchNorm, optimizer state, batch size, seed.
    b = {
        **common,
        "model": "convnet",
        "depth": 3,
        "pool_after": "2",
        "batch_size": 32,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "bn_position": "before_relu",
        "seed": 11,
    }
    search_alg, param_space = fixed_configs_search([a, b, a])
    # One CPU: one trial at a time, in order (a fixed-config search ignores max_concurrent_trials).
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        tuner = tune.Tuner(
            tune.with_parameters(train_trial, data=load_digits()),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="max", num_samples=3, search_alg=search_alg, reuse_actors=True
            ),
            run_config=tune.RunConfig(name="search", storage_path=str(exp), verbose=0),
        )
        grid = tuner.fit()
    finally:
        ray.shutdown()
    assert grid.num_errors == 0
    runs = sorted((r.metrics_dataframe for r in grid), key=lambda f: f["timestamp"].min())
    assert len({int(pid) for f in runs for pid in f["pid"]}) == 1, "the three trials did not share a worker"
    keys = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy"]
    first, other, again = (f[keys].reset_index(drop=True) for f in runs)
    assert not first.equals(other)  # B really is a different trial
    assert first.equals(again), f"A first in the worker:\n{first}\nA after B:\n{again}"


@pytest.mark.slow
def test_a_trial_that_cannot_heal_ends_once_while_a_killed_worker_is_retried(tmp_path, monkeypatch):
    """A real Ray run, one trial at a time, --max-failures 2: a ConvNet whose 17-pixel kernels cannot be
    built on 32px digits and a config Ray hands over that does not validate (kernel_size 0) each end
    their trial once, with the error in trials.parquet and nothing for Tune to retry; the healthy trial's
    worker, SIGKILLed as epoch 2 trains (tests/fault_plugin.py), is retried from its epoch-1 checkpoint."""
    from ray import tune

    base = {"model": "convnet", "dataset": "digits", "max_epochs": 3, "depth": 2, "base_width": 8}
    grid = run_with_faults(
        tmp_path,
        monkeypatch,
        [{"at": "mid_epoch", "epoch": 2}],
        {**base, "pool_after": "2", "batch_size": 64, "kernel_size": tune.grid_search([3, 17, 0])},
    )
    assert grid.num_errors == 0  # the two that cannot heal ended cleanly: Tune had nothing to retry
    exp = tmp_path / "exp"
    trials, epochs = (t.to_pandas() for t in build_tables(exp))
    by_kernel = trials.set_index("kernel_size")
    assert by_kernel.loc[17, "error"].startswith("the model cannot be built (ValueError): ConvNet with depth=2")
    assert by_kernel.loc[0, "error"].startswith("bad config (ValueError): kernel_size must be >= 1")
    for kernel in (17, 0):
        assert by_kernel.loc[kernel, "status"] == "error" and by_kernel.loc[kernel, "epochs_completed"] == 0
    folders = [d for d in (exp / "search").iterdir() if (d / "params.json").exists()]
    results = {json.loads((d / "params.json").read_text())["kernel_size"]: d for d in folders}
    for kernel in (17, 0):  # one attempt, one report; a retry would have left Tune's error.txt
        assert len((results[kernel] / "result.json").read_text().splitlines()) == 1
        assert not (results[kernel] / "error.txt").exists()
    # The killed one: a second process took over from the epoch-1 checkpoint and completed the trial.
    (hit,) = fault_plugin.fired(tmp_path / "plan.json")  # where run_with_faults wrote it
    rows = [json.loads(line) for line in (results[3] / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["pid"] == hit["pid"]] == [1]
    retried = [r for r in rows if r["pid"] != hit["pid"]]
    assert [r["epoch"] for r in retried] == [2, 3] and retried[0]["iterations_since_restore"] == 1
    assert by_kernel.loc[3, "status"] == "completed" and list(epochs["epoch"]) == [1, 2, 3]


def run_with_faults(tmp_path: Path, monkeypatch, faults: list[dict], param_space: dict):
    """A real Ray Tune run of train_trial over `param_space` in tmp_path/exp (an experiment folder the
    tables read), one trial at a time in fresh workers, 2 retries, the fault plugin doing `faults`
    (tests/fault_plugin.py, its plan in tmp_path/plan.json): the ResultGrid."""
    import ray
    from ray import tune

    from trainables.data import load_digits
    from trainables.trainable import train_trial

    exp = tmp_path / "exp"
    exp.mkdir()
    max_epochs = param_space["max_epochs"]
    (exp / "experiment.json").write_text(json.dumps({"experiment": "exp", "space": "test", "max_epochs": max_epochs}))
    plan = fault_plugin.write_plan(tmp_path / "plan.json", faults)
    monkeypatch.setenv(fault_plugin.PLAN_ENV, str(plan))  # workers inherit it
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        tuner = tune.Tuner(
            tune.with_parameters(train_trial, data=load_digits(), plugins=(str(FAULT_PLUGIN),)),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", max_concurrent_trials=1, reuse_actors=False),
            run_config=tune.RunConfig(
                name="search", storage_path=str(exp), verbose=0, failure_config=tune.FailureConfig(max_failures=2)
            ),
        )
        return tuner.fit()
    finally:
        ray.shutdown()
