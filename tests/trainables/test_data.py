import pickle
from pathlib import Path

import numpy as np
import pytest

from trainables import data
from trainables.data import DatasetUnavailable

SHARED_CIFAR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write_cifar(root: Path, n_train: int = 60, n_test: int = 20, classes: int = 30, protocol: int = 2) -> dict:
    """A small CIFAR-100 folder in the dataset's own format: dicts of 'data' (N, 3072) uint8 rows
    holding the red, green and blue planes in turn, and 'fine_labels'."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(i % classes) for i in range(n)]
        payload = {b"data": rows, b"fine_labels": labels, b"coarse_labels": [0] * n, b"batch_label": b"x"}
        (folder / split).write_bytes(pickle.dumps(payload, protocol=protocol))
        splits[split] = (rows, np.array(labels))
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(classes)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return splits


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/keras-hpo-pwned",))


def test_unpickler_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = Path("/tmp/keras-hpo-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(pickle.UnpicklingError, match="refused: .*system"):
        data.safe_unpickle(pickle.dumps({"data": Exploit()}))
    assert not marker.exists()


def test_unpickler_admits_arrays_lists_dicts_strings_bytes():
    payload = {"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "b": [1, 2], "c": "text", "d": b"raw"}
    for protocol in (2, 4, 5):
        out = data.safe_unpickle(pickle.dumps(payload, protocol=protocol))
        np.testing.assert_array_equal(out["a"], payload["a"])
        assert out["b"] == [1, 2] and out["c"] == "text" and out["d"] == b"raw"


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_loader_reads_the_original_format_and_reorders_planes(tmp_path, protocol):
    splits = write_cifar(tmp_path, protocol=protocol)
    ds = data.load_cifar100(tmp_path, num_classes=25, name="cifar100_25")
    rows, labels = splits["train"]
    keep = labels < 25
    assert ds.x_train.shape == (keep.sum(), 32, 32, 3) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.y_train, labels[keep])
    first = rows[keep][0]
    # Pixel (row 3, col 7): red at 3*32+7, green 1024 further, blue 2048 further.
    assert tuple(ds.x_train[0, 3, 7]) == (first[3 * 32 + 7], first[1024 + 3 * 32 + 7], first[2048 + 3 * 32 + 7])
    assert ds.num_classes == 25 and ds.class_names[:2] == ("class0", "class1")
    assert set(np.unique(ds.y_test)) <= set(range(25))


def test_cifar_dir_may_be_the_dataset_folder_itself(tmp_path):
    write_cifar(tmp_path)
    ds = data.load_cifar100(tmp_path / "cifar-100-python", num_classes=30)
    assert len(ds.y_train) == 60


def test_cifar100_needs_all_its_classes(tmp_path):
    write_cifar(tmp_path, classes=30)
    with pytest.raises(DatasetUnavailable, match="cifar100_25"):
        data.load_cifar100(tmp_path, num_classes=100)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "truncated or corrupted"),
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "truncated or corrupted|not a plain"),
        (lambda p: p.write_bytes(pickle.dumps(Exploit())), "not a plain CIFAR-100 pickle"),
        (lambda p: p.unlink(), "does not exist|holds no"),
    ],
)
def test_damaged_cifar_files_raise_dataset_unavailable(tmp_path, damage, message):
    write_cifar(tmp_path)
    damage(tmp_path / "cifar-100-python" / "train")
    with pytest.raises(DatasetUnavailable, match=message):
        data.load_cifar100(tmp_path, num_classes=25)


def test_missing_data_dir_names_the_flag(tmp_path):
    with pytest.raises(DatasetUnavailable, match="--data-dir"):
        data.load_dataset("cifar100_25", tmp_path / "nowhere")


def test_digits_are_offline_uint8_32x32_with_a_fixed_stratified_split():
    a, b = data.load_digits(), data.load_digits()
    assert a.x_train.shape[1:] == (32, 32, 3) and a.x_train.dtype == np.uint8
    assert a.num_classes == 10 and len(a.y_train) + len(a.y_test) == 1797
    np.testing.assert_array_equal(a.y_test, b.y_test)
    share = np.bincount(a.y_test, minlength=10) / np.bincount(a.y_train, minlength=10)
    assert share.min() > 0.2 and share.max() < 0.3  # every class ~20 % test


def test_validation_split_is_stratified_fixed_by_seed_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    tr, va = data.validation_split(labels, seed=3)
    tr2, va2 = data.validation_split(labels, seed=3)
    _, va3 = data.validation_split(labels, seed=4)
    assert len(va) == 50 and not set(tr) & set(va) and len(tr) + len(va) == 500
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, va3)
    assert (np.bincount(labels[va]) == 5).all()


@pytest.mark.skipif(
    not (SHARED_CIFAR / "cifar-100-python" / "train").exists(),
    reason="opt-in real data: ../shared/data is not on this machine",
)
def test_real_cifar100_classes_0_to_24():
    ds = data.load_dataset("cifar100_25", SHARED_CIFAR)
    assert ds.x_train.shape == (12_500, 32, 32, 3) and ds.x_test.shape == (2_500, 32, 32, 3)
    assert (np.bincount(ds.y_train) == 500).all() and ds.class_names[0] == "apple"
