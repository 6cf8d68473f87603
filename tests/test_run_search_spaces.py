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
from cub_factory import make_cub_folder  # noqa: E402

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
    out = usage_error(search("--space", "depth", "--search", "grid", "--storage-path", str(tmp_path)),
                      "--search grid", "'depth'", *with_grid)
    assert list(tmp_path.iterdir()) == [], out.stderr


@pytest.mark.parametrize("flags, words", [
    (("--space", "basenet", "--confirm-top", "2"), ("--confirm-top", "--repeats")),
    (("--space", "basenet", "--repeats", "2"), ("--repeats", "--confirm-top", "--search grid")),
    (("--space", "reference", "--search", "grid", "--num-samples", "3"), ("--num-samples",)),
    (("--space", "basenet", "--patience", "-1"), ("--patience",)),
    (("--space", "basenet", "--weights", "none"), ("--weights", "transfer")),
    (("--space", "depth", "--input-size", "64"), ("--input-size", "transfer")),
    (("--space", "transfer", "--weights", "none", "--input-size", "32"), ("--input-size 32", "75")),
    (("--space", "transfer", "--weights", "/no/such/weights.h5"), ("--weights", "no such file")),
])
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
def test_transfer_space_runs_end_to_end_on_a_tiny_cub_folder(search, tmp_path):
    make_cub_folder(tmp_path / "data", n_classes=3, per_class=15, size=40)
    ok(search("--space", "transfer", "--data-dir", str(tmp_path / "data"), "--weights", "none",
              "--input-size", "75", "--num-samples", "2", "--max-epochs", "1", "--scheduler", "fifo",
              "--storage-path", str(tmp_path / "res"), "--name", "x"))
    trials = trials_of(tmp_path / "res", "x")
    assert len(trials) == 2 and (trials["status"] == "completed").all(), trials[["status", "error"]]
    assert set(trials["model"]) <= {"resnet50", "inception_resnet_v2"}
    assert (trials["dataset"] == "cub200").all() and (trials["weights"] == "none").all()
    assert (trials["input_size"] == 75).all()
    assert (trials["gpus"] == 0).all()  # the space's default GPU applies only where Ray sees GPUs


# --- the reference grid, every cell twice ----------------------------------------------------------

@pytest.mark.slow
def test_reference_grid_runs_every_cell_twice_with_distinct_seeds(search, tmp_path):
    ok(search("--space", "reference", "--search", "grid", "--repeats", "2", "--dataset", "digits",
              "--max-epochs", "1", "--seed", "5", "--storage-path", str(tmp_path), "--name", "g"))
    trials = trials_of(tmp_path, "g")
    cells = SPACES["reference"].cells()
    assert len(trials) == 2 * len(cells)
    assert (trials["status"] == "completed").all(), trials[["status", "error"]]
    for cell in cells:
        mask = pd.Series(True, index=trials.index)
        for knob, value in cell.items():
            mask &= trials[knob] == value
        assert sorted(trials.loc[mask, "seed"]) == [5, 6], cell
