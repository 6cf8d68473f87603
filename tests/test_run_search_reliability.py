"""Bad input never starts a search: exit 2, one line naming the flag or file and the fix, no traceback,
and nothing under --storage-path written or overwritten. Plus --resume's argument handling and the
atomic table write. Each case runs run_search.py in its own process, as a user would."""

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import tables
from experiment import storage
from tests.cub_factory import make_cub_folder

EXISTING = "old"  # an experiment already under the storage path; bad input must leave it as it was


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under `root` with a hash of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def store(tmp_path):
    """A storage path holding one earlier experiment (an experiment.json and a table)."""
    root = tmp_path / "results"
    (root / EXISTING / "tables").mkdir(parents=True)
    (root / EXISTING / "experiment.json").write_text(json.dumps({"experiment": EXISTING, "args": {}}))
    pq.write_table(pa.table({"trial_id": ["a"]}), root / EXISTING / "tables" / "trials.parquet")
    return root


def refused(search, store: Path, *args: str, expect: tuple[str, ...]) -> str:
    before = snapshot(store)
    out = search(*args, "--storage-path", str(store), timeout=300)
    err = out.stderr
    assert out.returncode == 2, out.stdout[-2000:] + err[-3000:]
    assert "Traceback" not in err + out.stdout
    message = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert message, err[-2000:]
    for text in expect:
        assert text in err, (text, err[-2000:])
    assert snapshot(store) == before, "bad input changed the storage path"
    return err


def cifar_dir(root: Path, train: bytes, test: bytes | None = None) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(train)
    (folder / "test").write_bytes(test if test is not None else train)
    return root


def cifar_payload(n: int = 50) -> bytes:
    rng = np.random.default_rng(0)
    return pickle.dumps(
        {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"fine_labels": list(np.arange(n) % 25)}, protocol=2
    )


DIGITS = ("--space", "batchnorm", "--dataset", "digits")


# --- usage -------------------------------------------------------------------------------------


def test_unknown_space(search, store):
    refused(search, store, "--space", "nope", expect=("--space 'nope' is unknown", "batchnorm"))


def test_unknown_dataset(search, store):
    refused(search, store, "--space", "batchnorm", "--dataset", "mnist", expect=("--dataset", "invalid choice"))


@pytest.mark.parametrize("flag", ["--num-samples", "--max-epochs"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_counts(search, store, flag, value):
    refused(search, store, *DIGITS, flag, value, expect=(f"{flag} must be a positive integer",))


@pytest.mark.parametrize(
    "argv,expect",
    [
        (("--repeats", "-1", "--confirm-top", "2"), "--repeats must be >= 0"),
        (("--repeats", "0", "--confirm-top", "2"), "--confirm-top K needs --repeats R (R >= 1)"),
    ],
)
def test_non_positive_repeats(search, store, argv, expect):
    # --repeats 0 is the default (no confirmation stage), so 0 is refused only where repeats are asked for.
    refused(search, store, *DIGITS, *argv, expect=(expect,))


def test_negative_max_failures(search, store):
    refused(search, store, *DIGITS, "--max-failures", "-1", expect=("--max-failures must be >= 0",))


def test_missing_space_without_resume(search, store):
    refused(search, store, "--dataset", "digits", expect=("--space is required",))


# --- storage and experiment names --------------------------------------------------------------


def test_existing_name_without_resume_is_refused(search, store):
    refused(search, store, *DIGITS, "--name", EXISTING, expect=("already exists", "--resume"))


@pytest.mark.parametrize(
    "name,why,resume",
    [
        ("../elsewhere", "has a path separator", False),
        ("a\\b", "has a path separator", True),
        ("..", "has '..'", True),
        ("s3:run?", "has characters a folder or bucket key cannot hold plainly (':' '?')", False),
    ],
)
def test_a_name_that_would_leave_the_storage_path_is_refused(search, store, tmp_path, name, why, resume):
    argv = ("--resume", "--name", name) if resume else (*DIGITS, "--name", name)
    outside = snapshot(tmp_path)
    refused(search, store, *argv, expect=(f"--name {name!r} {why}", "letters, digits"))
    assert snapshot(tmp_path) == outside, "a refused --name wrote next to the storage path"


def test_resume_of_a_missing_experiment(search, store):
    refused(search, store, "--resume", "--name", "never-ran", expect=("--resume: no experiment", "--name"))


def test_resume_without_a_name(search, store):
    refused(search, store, "--resume", expect=("--resume needs --name",))


def test_resume_of_an_experiment_whose_search_never_started(search, store):
    refused(search, store, "--resume", "--name", EXISTING, expect=("nothing to resume",))


def test_storage_path_below_a_file(search, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = search(*DIGITS, "--storage-path", str(blocker / "results"), timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--storage-path" in out.stderr and "is a file, not a folder" in out.stderr
    assert blocker.read_text() == "not a folder"


def test_storage_path_on_a_read_only_filesystem(search):
    # /proc refuses new entries even to root (who ignores permission bits), so this holds in any container.
    out = search(*DIGITS, "--storage-path", "/proc/keras-hpo-results", timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--storage-path /proc/keras-hpo-results is not writable" in out.stderr


# --- data --------------------------------------------------------------------------------------

CIFAR = ("--space", "batchnorm", "--dataset", "cifar100_25")


def test_missing_data_dir(search, store, tmp_path):
    refused(
        search,
        store,
        *CIFAR,
        "--data-dir",
        str(tmp_path / "nowhere"),
        expect=("--data-dir", "does not exist", "--dataset digits"),
    )


def test_data_dir_without_the_cifar_layout(search, store, tmp_path):
    (tmp_path / "data" / "something-else").mkdir(parents=True)
    refused(
        search,
        store,
        *CIFAR,
        "--data-dir",
        str(tmp_path / "data"),
        expect=("--data-dir", "holds no cifar-100-python/", "'train' and 'test'"),
    )


def test_data_dir_that_is_a_file(search, store, tmp_path):
    (tmp_path / "data.tar.gz").write_bytes(b"\x1f\x8b")
    refused(search, store, *CIFAR, "--data-dir", str(tmp_path / "data.tar.gz"), expect=("--data-dir",))


def test_truncated_cifar_pickle(search, store, tmp_path):
    data = cifar_dir(tmp_path / "data", cifar_payload()[:3000])
    refused(search, store, *CIFAR, "--data-dir", str(data), expect=("truncated or corrupted", "re-download"))


def test_corrupted_cifar_pickle(search, store, tmp_path):
    garbage = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = cifar_dir(tmp_path / "data", garbage)
    refused(search, store, *CIFAR, "--data-dir", str(data), expect=("cifar-100-python/train", "re-download"))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_without_running_it(search, store, tmp_path):
    marker = tmp_path / "pwned"
    data = cifar_dir(tmp_path / "data", pickle.dumps({b"data": _RunsCode(marker), b"fine_labels": []}))
    refused(search, store, *CIFAR, "--data-dir", str(data), expect=("refused", "system"))
    assert not marker.exists(), "the pickle's payload ran"


TRANSFER = ("--space", "transfer", "--dataset", "cub200")


def test_cub_folder_missing_an_index_file(search, store, tmp_path):
    folder = make_cub_folder(tmp_path / "cub")
    (folder / "image_class_labels.txt").unlink()
    refused(
        search, store, *TRANSFER, "--data-dir", str(tmp_path / "cub"), expect=("image_class_labels.txt", "re-extract")
    )


def test_cub_folder_missing_an_image(search, store, tmp_path):
    folder = make_cub_folder(tmp_path / "cub")
    first = sorted((folder / "images").rglob("*.jpg"))[0]
    first.unlink()
    refused(search, store, *TRANSFER, "--data-dir", str(tmp_path / "cub"), expect=(first.name, "missing"))


# --- resources (Ray starts, so slow) -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("flag,value,key", [("--cpus-per-trial", "4096", "CPU"), ("--gpus-per-trial", "64", "GPU")])
def test_more_resources_per_trial_than_the_cluster_has(search, store, flag, value, key):
    refused(search, store, *DIGITS, flag, value, expect=(flag, f"{key})", "wait forever"))


# --- resume arguments (no Ray needed) -----------------------------------------------------------


def test_resume_takes_the_stored_settings_and_refuses_contradictions():
    from driver import UsageError
    from driver.resume import resumed
    from run_search import request_of

    stored = (
        request_of(
            [
                "--space",
                "batchnorm",
                "--dataset",
                "digits",
                "--num-samples",
                "3",
                "--max-epochs",
                "2",
                "--seed",
                "7",
                "--data-dir",
                "/data/cifar",
                "--name",
                "x",
            ]
        )[0]
    ).stored()

    def resume(*argv: str):
        args, given = request_of(["--resume", "--name", "x", *argv])
        return resumed(args, given, stored, "results/x")

    args = resume("-v")
    assert (args.space, args.num_samples, args.max_epochs, args.seed, args.resume) == ("batchnorm", 3, 2, 7, True)
    assert args.verbose == 1
    assert resume("--num-samples", "3").num_samples == 3  # repeating a stored value is fine
    assert resume("--storage-path", "elsewhere").storage_path == "elsewhere"
    # What --resume may change keeps its stored value unless given again.
    assert (args.data_dir, resume("--data-dir", "/mnt/cifar").data_dir) == ("/data/cifar", "/mnt/cifar")
    # A larger --num-samples extends the search; --confirm-top/--repeats given anew confirm afresh.
    assert resume("--num-samples", "4").num_samples == 4
    assert (resume("--confirm-top", "1", "--repeats", "2").confirm_top, args.confirm_top) == (1, 0)
    with pytest.raises(UsageError, match=r"--max-epochs 3 .*stored: 2.*drop those flags"):
        resume("--max-epochs", "3")
    with pytest.raises(UsageError, match="--seed"):
        resume("--seed=8")
    with pytest.raises(UsageError, match="no stored arguments"):
        resumed(request_of(["--resume", "--name", "x"])[0], frozenset(), None, "results/x")


def test_resume_with_a_contradicting_flag_exits_2(search, store):
    meta = json.loads((store / EXISTING / "experiment.json").read_text())
    meta["args"] = {"space": "batchnorm", "dataset": "digits", "num_samples": 3, "max_epochs": 2}
    (store / EXISTING / "experiment.json").write_text(json.dumps(meta))
    (store / EXISTING / "search").mkdir()
    (store / EXISTING / "search" / "tuner.pkl").write_bytes(b"")
    refused(
        search,
        store,
        "--resume",
        "--name",
        EXISTING,
        "--max-epochs",
        "5",
        expect=("--max-epochs 5", "stored: 2", "drop those flags"),
    )


# --- tables -------------------------------------------------------------------------------------

WRITER = """
import sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from analysis import tables
from experiment import storage
fs, path = storage.resolve(sys.argv[1])
moment = sys.argv[2]


def table(version):
    n = 200_000 + 1000 * version
    return pa.table({"version": np.full(n, version), "x": np.arange(n, dtype=np.float64)})


def wait_here():
    print("inside", flush=True)
    sys.stdin.readline()  # SIGKILLed here


def write_then_wait(t, where, filesystem=None, **kwargs):
    if moment == "written":  # the temp file whole, not yet renamed over the table
        real(t, where, filesystem=filesystem, **kwargs)
        wait_here()
        return
    with pq.ParquetWriter(where, t.schema, filesystem=filesystem) as writer:  # half of it, no footer
        writer.write_table(t.slice(0, len(t) // 2))
        wait_here()
        writer.write_table(t.slice(len(t) // 2))


tables.write_table(table(1), fs, path)
real = pq.write_table
tables.pq.write_table = write_then_wait  # what write_table writes its temp file with
tables.write_table(table(2), fs, path)
"""


@pytest.mark.parametrize("moment", ["half_written", "written"])
def test_a_crash_mid_table_write_leaves_the_previous_table_intact(tmp_path, moment):
    """SIGKILL a process rewriting a table while it writes the new version's temp file, or after it wrote
    it and before the rename: the table reads back whole as the previous version, and the next write
    goes through over the temp file left behind."""
    import subprocess
    import sys

    path = tmp_path / "tables" / "trials.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), moment],
        cwd=Path(__file__).parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "inside"  # version 1 written, version 2 being written
    finally:
        proc.kill()
        proc.wait()
    temp = tmp_path / "tables" / ".trials.parquet.tmp"
    assert temp.exists(), "the kill did not land mid-write"
    if moment == "half_written":
        with pytest.raises(pa.ArrowInvalid):
            pq.read_table(temp)  # torn: what a rename-free write would have left as the table
    table = pq.read_table(path)
    assert set(table.column("version").to_pylist()) == {1} and table.num_rows == 201_000
    fs, where = storage.resolve(path)
    tables.write_table(pa.table({"version": [3]}), fs, where)
    assert pq.read_table(path).column("version").to_pylist() == [3] and not temp.exists()


def test_replayed_epochs_after_a_restore_are_deduplicated_last_report_wins(tmp_path):
    """What a retried trial leaves in result.json: epoch 2 reported, the worker dies, epoch 2 reported
    again from the epoch-1 checkpoint; plus a line cut short by the kill."""
    exp = tmp_path / "exp"
    trial = exp / "search" / "t1"
    trial.mkdir(parents=True)
    (exp / "experiment.json").write_text(json.dumps({"experiment": "exp", "space": "batchnorm", "max_epochs": 3}))
    (trial / "params.json").write_text(json.dumps({"model": "convnet", "dataset": "digits", "max_epochs": 3}))

    def row(epoch, val_accuracy, t):
        return json.dumps(
            {
                "trial_id": "t1",
                "epoch": epoch,
                "loss": 1.0,
                "accuracy": 0.5,
                "val_loss": 1.0,
                "val_accuracy": val_accuracy,
                "learning_rate": 0.01,
                "epoch_time_s": 1.0,
                "timestamp": t,
                "time_this_iter_s": 1.0,
                "time_total_s": t - 99,
            }
        )

    lines = [row(1, 0.1, 100), row(2, 0.2, 101), row(2, 0.25, 102)[:40], row(2, 0.3, 103), row(3, 0.4, 104)]
    (trial / "result.json").write_text("\n".join(lines) + "\n")
    trials, epochs = (t.to_pandas() for t in tables.build_tables(exp))
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert list(epochs["val_accuracy"]) == [0.1, 0.3, 0.4]
    assert trials.loc[0, "status"] == "completed" and trials.loc[0, "epochs_completed"] == 3


def test_a_full_storage_is_recognised_through_tunes_wrapper():
    """Tune wraps an exception a callback raises in a TuneError of its text; the driver still tells a full
    storage (tuning.tune_settings.StorageFull, or any ENOSPC) from another failure."""
    import errno

    from ray.tune.error import TuneError

    from driver.guards import is_storage_full
    from tuning.tune_settings import StorageFull

    def wrapped(inner: BaseException) -> TuneError:
        try:
            try:
                raise inner
            except (OSError, ValueError):
                raise TuneError("Traceback ...")  # noqa: B904 - as Tune does: the text, the exception as context
        except TuneError as e:
            return e

    assert is_storage_full(wrapped(StorageFull(errno.ENOSPC, "trial t could not write")))
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_storage_full(wrapped(OSError(errno.EACCES, "Permission denied")))
    assert not is_storage_full(wrapped(ValueError("nan loss")))
