"""The CUB-200-2011 loader on a tiny folder in the real distribution format."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cub_factory import make_cub_folder
from trainables import cub
from trainables.data import DatasetUnavailable, load_dataset


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    # 3 classes x 6 photos of 48x64 pixels (not square, like real CUB photos); 4 train, 2 test each.
    root = tmp_path_factory.mktemp("cub")
    make_cub_folder(root, n_classes=3, per_class=6, size=48, width=64, train_per_class=4)
    return root


def test_splits_labels_shapes(cub_root):
    ds = cub.load_cub200(cub_root, image_size=40)
    assert ds.name == "cub200" and ds.num_classes == 3
    assert ds.x_train.shape == (12, 40, 40, 3) and ds.x_test.shape == (6, 40, 40, 3)
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int32
    # 1-based labels in image_class_labels.txt become 0-based; 4 train and 2 test per class.
    assert np.bincount(ds.y_train).tolist() == [4, 4, 4]
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    assert ds.class_names == ("001.Bird_1", "002.Bird_2", "003.Bird_3")


def test_data_dir_may_be_the_cub_folder_itself_and_load_dataset_dispatches(cub_root):
    outer = cub.load_cub200(cub_root, image_size=32)
    inner = load_dataset("cub200", cub_root / "CUB_200_2011", image_size=32)
    np.testing.assert_array_equal(outer.x_train, inner.x_train)
    np.testing.assert_array_equal(outer.y_test, inner.y_test)


def test_resized_image_matches_the_decoded_photo(cub_root):
    # The first training image, decoded and resized independently with PIL, agrees closely.
    from PIL import Image

    ds = cub.load_cub200(cub_root, image_size=64)
    first = sorted((cub_root / "CUB_200_2011" / "images").rglob("*.jpg"))[0]
    reference = np.asarray(Image.open(first).convert("RGB").resize((64, 64), Image.BILINEAR), dtype=float)
    assert np.abs(ds.x_train[0].astype(float) - reference).mean() < 6


def test_crop_to_bbox_changes_the_image_to_the_box(cub_root):
    full = cub.load_cub200(cub_root, image_size=24)
    cropped = cub.load_cub200(cub_root, image_size=24, crop_to_bbox=True)
    assert cropped.x_train.shape == full.x_train.shape
    assert not np.array_equal(full.x_train, cropped.x_train)
    # The factory fills each box with one colour (inverse of the class colour plus noise-free),
    # so a cropped image is nearly uniform while the full photo is not.
    assert cropped.x_train[0].std(axis=(0, 1)).max() < full.x_train[0].std(axis=(0, 1)).max()
    assert cropped.x_train[0].std(axis=(0, 1)).max() < 12


def test_missing_index_file_names_it(tmp_path):
    folder = make_cub_folder(tmp_path, n_classes=2, per_class=2, size=16)
    (folder / "train_test_split.txt").unlink()
    with pytest.raises(DatasetUnavailable, match="train_test_split.txt"):
        cub.load_cub200(tmp_path, image_size=16)


def test_missing_bounding_boxes_only_matters_when_cropping(tmp_path):
    folder = make_cub_folder(tmp_path, n_classes=2, per_class=2, size=16)
    (folder / "bounding_boxes.txt").unlink()
    assert cub.load_cub200(tmp_path, image_size=16).x_train.shape[0] == 2
    with pytest.raises(DatasetUnavailable, match="bounding_boxes.txt"):
        cub.load_cub200(tmp_path, image_size=16, crop_to_bbox=True)


def test_missing_image_names_it(tmp_path):
    folder = make_cub_folder(tmp_path, n_classes=2, per_class=2, size=16)
    victim = sorted((folder / "images").rglob("*.jpg"))[1]
    victim.unlink()
    with pytest.raises(DatasetUnavailable, match=victim.name):
        cub.load_cub200(tmp_path, image_size=16)


def test_corrupt_image_names_it(tmp_path):
    folder = make_cub_folder(tmp_path, n_classes=2, per_class=2, size=16)
    victim = sorted((folder / "images").rglob("*.jpg"))[2]
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetUnavailable, match=victim.name):
        cub.load_cub200(tmp_path, image_size=16)


def test_data_dir_without_cub_folder(tmp_path):
    with pytest.raises(DatasetUnavailable, match="CUB_200_2011"):
        cub.load_cub200(tmp_path, image_size=16)
    with pytest.raises(DatasetUnavailable, match="does not exist"):
        cub.load_cub200(tmp_path / "nowhere", image_size=16)


def test_no_data_dir_and_no_network_is_dataset_unavailable(tmp_path, monkeypatch):
    # An empty Keras cache forces the download; a closed local port stands in for an unreachable
    # server, so the test never fetches the 1.1 GB archive where there is internet.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(cub, "CUB_URL", "http://127.0.0.1:9/CUB_200_2011.tgz")
    with pytest.raises(DatasetUnavailable, match="could not be downloaded"):
        cub.load_cub200(None, image_size=16)
