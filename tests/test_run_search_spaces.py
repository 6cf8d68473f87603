"""Every space end to end, --search grid with --repeats, the confirmation stage, and the flags' checks.

End-to-end runs go through run_search.py in a subprocess (Ray is process-global), on the
bundled digits data, or a tiny CUB folder for the transfer space, with budgets of an epoch or two.
"""

import sys
from pathlib import Path

import pandas as pd
import pytest

from search_spaces import SPACES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cub_factory import make_cub_folder

TINY = ("--dataset", "digits", "--num-samples", "2", "--max-epochs", "1", "--scheduler", "fifo")


def ok(out):
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def usage_error(out, *words):
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    for word in words:
        assert word in out.stderr, out.stderr
    return out


def trials_of(root, name):
    return pd.read_parquet(Path(root) / name / "tables" / "trials.parquet")


# --- bad flags: exit 2 before anything starts (no Ray) ---------------------------------------------


def test_grid_on_a_space_without_one_names_the_spaces_that_have_one(search, tmp_path):
    with_grid = sorted(n for n, s in SPACES.items() if s.cells())
    out = usage_error(
        search("--space", "depth", "--search", "grid", "--storage-path", str(tmp_path)),
        "--search grid",
        "'depth'",
        *with_grid,
    )
    assert list(tmp_path.iterdir()) == [], out.stderr


@pytest.mark.parametrize(
    "flags, words",
    [
        (("--space", "basenet", "--confirm-top", "2"), ("--confirm-top", "--repeats")),
        (("--space", "basenet", "--repeats", "2"), ("--repeats", "--confirm-top", "--search grid")),
        (("--space", "reference", "--search", "grid", "--num-samples", "3"), ("--num-samples",)),
        (("--space", "basenet", "--patience", "-1"), ("--patience",)),
        (("--space", "basenet", "--weights", "none"), ("--weights", "transfer")),
        (("--space", "depth", "--input-size", "64"), ("--input-size", "transfer")),
        (("--space", "transfer", "--weights", "none", "--input-size", "32"), ("--input-size 32", "75")),
        (("--space", "transfer", "--weights", "/no/such/weights.h5"), ("--weights", "no such file")),
    ],
)
def test_bad_search_flags_exit_2_naming_the_flag(search, tmp_path, flags, words):
    usage_error(search(*flags, "--storage-path", str(tmp_path)), *words)
    assert list(tmp_path.iterdir()) == []


# --- every space end to end -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("space", ["depth", "augmentation", "learning_rate", "convnet"])
def test_space_runs_end_to_end_on_digits(search, tmp_path, space):
    ok(search("--space", space, *TINY, "--storage-path", str(tmp_path), "--name", "x"))
    trials = trials_of(tmp_path, "x")
    assert len(trials) == 2 and (trials["space"] == space).all()
    assert (trials["status"] == "completed").all(), trials[["status", "error"]]
    assert trials["test_accuracy"].notna().all()


@pytest.mark.slow
def test_basenet_space_writes_the_recipe_knobs_as_typed_columns(search, tmp_path):
    """The knobs beyond the study (schedule, warm-up, smoothing, crop_flip) through a real search:
    typed columns of trials.parquet, null where the trial does not read them, and the learning rate
    the epochs table records follows each trial's schedule."""
    import pyarrow.parquet as pq

    flags = ("--dataset", "digits", "--num-samples", "4", "--max-epochs", "2", "--scheduler", "fifo")
    ok(
        search(
            "--space",
            "basenet",
            *flags,
            "--search",
            "random",
            "--seed",
            "28",
            "--storage-path",
            str(tmp_path),
            "--name",
            "b",
        )
    )
    schema = pq.read_schema(tmp_path / "b" / "tables" / "trials.parquet")
    assert str(schema.field("lr_schedule").type) in ("string", "large_string")
    assert str(schema.field("warmup_epochs").type) == "int64"
    assert str(schema.field("label_smoothing").type) == "double"
    trials = trials_of(tmp_path, "b")
    assert len(trials) == 4 and (trials["status"] == "completed").all(), trials[["status", "error"]]
    # Seed 28 draws every schedule and both optimizers, so each branch below checks a real trial.
    assert set(trials["lr_schedule"]) == {"constant", "cosine", "step"} and set(trials["optimizer"]) == {"sgd", "adam"}
    assert trials["lr_schedule"].notna().all() and trials["label_smoothing"].between(0, 0.2).all()
    assert (trials["warmup_epochs"].isna() == (trials["lr_schedule"] == "constant")).all()
    assert (trials["momentum"].isna() == (trials["optimizer"] == "adam")).all()
    epochs = pd.read_parquet(tmp_path / "b" / "tables" / "epochs.parquet")
    for _, t in trials.iterrows():
        lrs = epochs[epochs["trial_id"] == t["trial_id"]].sort_values("epoch")["learning_rate"].to_numpy()
        if t["lr_schedule"] == "constant":
            assert lrs == pytest.approx([t["learning_rate"]] * 2, rel=1e-6)
        elif t["lr_schedule"] == "cosine":
            assert lrs[-1] == pytest.approx(0.0, abs=1e-9)  # the end of the budget: the end of the cosine
        else:
            assert lrs[-1] == pytest.approx(t["learning_rate"] * 0.01, rel=1e-5)  # both milestones passed


@pytest.mark.slow
def test_transfer_space_runs_end_to_end_on_a_tiny_cub_folder(search, tmp_path):
    # 12 training images per class: after the 10 % validation split, one batch of 32 (the driver checks it).
    make_cub_folder(tmp_path / "data", n_classes=3, per_class=18, size=40)
    ok(
        search(
            "--space",
            "transfer",
            "--data-dir",
            str(tmp_path / "data"),
            "--weights",
            "none",
            "--input-size",
            "75",
            "--num-samples",
            "2",
            "--max-epochs",
            "1",
            "--scheduler",
            "fifo",
            "--storage-path",
            str(tmp_path / "res"),
            "--name",
            "x",
        )
    )
    trials = trials_of(tmp_path / "res", "x")
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials[["status", "error"]]
    assert set(trials["model"]) <= {"resnet50", "inception_resnet_v2"}
    assert (trials["dataset"] == "cub200").all() and (trials["weights"] == "none").all()
    assert (trials["input_size"] == 75).all()
    assert (trials["gpus"] == 0).all()  # the space's default GPU applies only where Ray sees GPUs


# --- the reference grid, every cell twice ----------------------------------------------------------


@pytest.mark.slow
def test_reference_grid_runs_every_cell_twice_with_distinct_seeds(search, tmp_path):
    ok(
        search(
            "--space",
            "reference",
            "--search",
            "grid",
            "--repeats",
            "2",
            "--dataset",
            "digits",
            "--max-epochs",
            "1",
            "--seed",
            "5",
            "--storage-path",
            str(tmp_path),
            "--name",
            "g",
        )
    )
    trials = trials_of(tmp_path, "g")
    cells = SPACES["reference"].cells()
    assert len(trials) == 2 * len(cells)
    assert (trials["status"] == "completed").all(), trials[["status", "error"]]
    for cell in cells:
        mask = pd.Series(True, index=trials.index)
        for knob, value in cell.items():
            mask &= trials[knob] == value
        assert sorted(trials.loc[mask, "seed"]) == [5, 6], cell


# --- what the flags put into every trial's config (the searchers as run_search builds them; no Ray) ----


def test_patience_weights_and_input_size_reach_every_trial_config():
    from driver.request import fixed_knobs
    from run_search import request_of
    from trainables.config import TrialConfig
    from tuning.optuna_search import build_search

    args, _ = request_of(["--space", "transfer", "--patience", "3", "--weights", "none", "--input-size", "96"])
    fixed = {"dataset": "cub200", "seed": 0, "max_epochs": 4, **fixed_knobs(args)}
    search_alg, param_space = build_search(args.search, SPACES["transfer"], fixed, seed=args.seed)
    assert param_space is None
    for i in range(5):
        config = TrialConfig.from_params(search_alg.suggest(str(i)))
        assert (config.patience, config.weights, config.input_size) == (3, "none", 96)
    # Off by default: no patience knob fixed, so trials keep TrialConfig's 0 (no early stopping).
    assert fixed_knobs(request_of(["--space", "basenet"])[0]) == {}


def test_grid_search_runs_fixed_points_one_per_cell_and_seed():
    from driver.request import fixed_knobs
    from run_search import request_of
    from tuning.optuna_search import build_search

    args, _ = request_of(["--space", "augmentation", "--search", "grid", "--repeats", "3", "--seed", "7"])
    fixed = {"dataset": "digits", "seed": 7, "max_epochs": 2, **fixed_knobs(args)}
    search_alg, param_space = build_search(args.search, SPACES["augmentation"], fixed, seed=7, repeats=args.repeats)
    points = search_alg._points_to_evaluate
    assert len(points) == 9 and set(param_space) == set(points[0])
    assert sorted((p["augmentation"], p["seed"]) for p in points) == sorted(
        (a, s) for a in ("simple", "complex", "whitening") for s in (7, 8, 9)
    )


def test_confirm_configs_take_the_best_distinct_configs_largest_budget_first_with_new_seeds():
    from analysis import selection
    from trainables.config import TrialConfig

    def row(trial_id, lr, epochs, acc, seed=4, status="stopped"):
        return {
            **TrialConfig(learning_rate=lr, seed=seed, max_epochs=3, patience=2).to_dict(),
            "phase": "search",
            "trial_id": trial_id,
            "status": status,
            "epochs_completed": epochs,
            "best_val_accuracy": acc,
        }

    trials = pd.DataFrame(
        [
            row("a", 0.1, 1, 0.99),  # best score, but only at a 1-epoch budget
            row("b", 0.2, 3, 0.80, status="completed"),
            row("c", 0.2, 3, 0.79, seed=5, status="completed"),  # the same config again (grid repeat)
            row("d", 0.3, 3, 0.70, status="completed"),
            row("e", 0.4, 3, 0.60, status="completed"),
            row("f", 0.5, 3, 0.95, status="error"),
        ]
    )
    configs = selection.confirm_configs(trials, top=2, repeats=2, max_epochs=3)
    assert [(c["learning_rate"], c["seed"]) for c in configs] == [(0.2, 6), (0.2, 7), (0.3, 6), (0.3, 7)]
    assert all(c["patience"] == 0 and c["max_epochs"] == 3 for c in configs)
    assert selection.confirm_configs(trials[trials["status"] == "error"], 2, 2, 3) == []
    # ASHA let one config through: the second comes from the next budget, the best there.
    few = trials[trials["trial_id"].isin(["a", "b", "c", "f"])]
    few = pd.concat([few, pd.DataFrame([row("g", 0.6, 1, 0.50)])])
    configs = selection.confirm_configs(few, top=2, repeats=1, max_epochs=3)
    assert [c["learning_rate"] for c in configs] == [0.2, 0.1]
