"""A user's own dataset, checked before Ray starts: each bad one exits 2 with one line naming the dataset,
the problem and the fix, and writes nothing. The datasets are made here, and come in the way a user's
do: a plugin file (docs/plugins.md) whose loader reads an .npz of grayscale images from --data-dir, with
a space over BaseNet and the user's own network."""

import textwrap

import numpy as np
import pytest

import run_search
from trainables.data import images_for_split, validation_size, validation_split
from tuning.optuna_search import STORAGE_ENV

PLUGIN = '''
"""My images (an .npz of 16x16 grayscale digits) and a space over BaseNet and my own network."""
from pathlib import Path

import numpy as np

from search_spaces import register_space
from search_spaces.base import SearchSpace
from trainables.data import ImageDataset
from trainables.registry import Dataset, Model, register_dataset, register_model


def load(data_dir=None):
    arrays = np.load(Path(data_dir) / "mine.npz", allow_pickle=True)
    return ImageDataset(
        "mine", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], int(arrays["num_classes"])
    )


def build(config, input_shape, num_classes):
    import keras

    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")]
    )


def define(trial):
    trial.suggest_categorical("model", ["basenet", "my_net"])
    trial.suggest_categorical("batch_size", [16, 32])


register_dataset(Dataset("mine", load=load, image_shape=(16, 16, 1), num_classes=10))
register_model(Model("my_net", build=build))
register_space(SearchSpace("mine", "BaseNet or my_net", define, dataset="mine", num_samples=2, max_epochs=1))
register_space(
    SearchSpace(
        "mine_grid",
        "ConvNet depths as a grid",
        lambda trial: None,
        dataset="mine",
        num_samples=1,
        max_epochs=1,
        grid=[{"model": "convnet", "depth": 2, "pool_after": "2"}, {"model": "convnet", "depth": 5, "pool_after": "2"}],
    )
)
'''


def images(per_class, side=16, classes=10, seed=0):
    """(x, y): `per_class[c]` (or `per_class` for every class) uint8 grayscale images of each class."""
    counts = per_class if isinstance(per_class, list) else [per_class] * classes
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    x = np.random.default_rng(seed).integers(0, 256, (len(y), side, side, 1), dtype=np.uint8)
    return x, y


def write(folder, x_train, y_train, x_test=None, y_test=None, num_classes=10):
    if x_test is None:
        x_test, y_test = images(5, side=x_train.shape[1] if x_train.ndim == 4 else 16, seed=1)
    folder.mkdir(exist_ok=True)
    np.savez(
        folder / "mine.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=num_classes
    )


def ragged():
    x, y = images(30)
    return np.array([img[: 16 - i % 2] for i, img in enumerate(x)], dtype=object), y


BAD = {
    # (data, --space, what the line says)
    "one_class_with_one_training_image": (
        lambda: images([30, 30, 30, 1, 30, 30, 30, 30, 30, 30]),
        "mine",
        ["class 3 has 1 training image", "needs at least 2 training images of every class"],
    ),
    "20_images": (
        lambda: images(2),
        "mine",
        [
            "its 20 training images give a stratified 10% validation split of 2, fewer than its 10 classes",
            "needs at least 91 training images",
        ],
    ),
    "8x8_images_with_a_basenet_space": (
        lambda: images(30, side=8),
        "basenet",
        [
            "has 8x8x1 images, which model 'basenet' of space 'basenet' cannot take",
            "needs images of at least 16x16 pixels",
            "upsample the images to at least 16x16",
        ],
    ),
    "8x8_images_with_basenet_among_the_spaces_models": (
        lambda: images(30, side=8),
        "mine",
        [
            "space 'mine' can sample model 'basenet', which cannot take the 8x8x1 images of dataset 'mine'",
            "drop model='basenet' from the space",
        ],
    ),
    "8x8_images_with_a_too_deep_convnet_cell": (
        lambda: images(30, side=8),
        "mine_grid --search grid",
        [
            "can sample model 'convnet' with depth=5",
            "needs images of at least 18x18 pixels",
            "drop depth=5",
            "--cells depth=2",
        ],
    ),
    "labels_outside_0_to_k_minus_1": (
        lambda: (images(30)[0], np.where(images(30)[1] == 9, 10, images(30)[1]).astype(np.int32)),
        "mine",
        ["y_train holds labels outside 0..9 (10)", "renumber the classes 0..9", "num_classes=11"],
    ),
    "training_and_test_images_of_different_shapes": (
        lambda: (*images(30), *images(5, side=12)),
        "mine",
        ["training images are 16x16x1 but test images 12x12x1", "resize both splits to one shape"],
    ),
    "images_of_mixed_shapes": (
        ragged,
        "mine",
        ["x_train is an object array (images of different shapes?)", "resize every image to one size"],
    ),
    "float_pixels": (
        lambda: (images(30)[0] / 255.0, images(30)[1]),
        "mine",
        ["x_train holds float64 pixels", "astype(np.uint8)"],
    ),
    "fewer_training_images_than_the_largest_batch": (
        lambda: images(10),
        "basenet",
        ["its training split holds 90 images", "fewer than one batch of 256", "let the space sample batch_size <= 90"],
    ),
    "num_classes_unlike_the_entrys": (
        lambda: (*images(30), *images(5, seed=1), 12),
        "mine",
        ["ImageDataset says num_classes=12 but its entry (register_dataset) says 10"],
    ),
}


@pytest.fixture
def user(tmp_path, isolated_registry, monkeypatch):
    """run_search.main with the user's plugin and data: (exit code, stderr); Ray may not start."""
    from tuning import cluster

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(cluster, "connect_ray", no_ray)
    # A run that passes the checks opens its study and names it in the environment (tuning.study) before
    # Ray; set here, monkeypatch's teardown removes it, or later tests' searchers would open this test's
    # journal ("" is no storage: a searcher falls back to its own).
    monkeypatch.setenv(STORAGE_ENV, "")
    plugin = tmp_path / "my_images_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN))

    def run(space, capsys):
        data, results = str(tmp_path / "data"), str(tmp_path / "results")
        code = run_search.main(
            [
                "--plugin",
                str(plugin),
                "--space",
                *space.split(),
                "--dataset",
                "mine",
                "--data-dir",
                data,
                "--storage-path",
                results,
            ]
        )
        return code, capsys.readouterr().err

    return run


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_dataset_exits_2_in_one_line_before_ray_starts_writing_nothing(case, user, tmp_path, capsys):
    data, space, words = BAD[case]
    write(tmp_path / "data", *data())
    code, err = user(space, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    line = err.strip()
    assert line.startswith("run_search.py: error: ") and "'mine'" in line, line
    for w in words:
        assert w in line, line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("classes", [10, 8], ids=["all_classes", "a_subset_of_the_entrys"])
def test_a_good_dataset_passes_every_check_and_ray_is_next(classes, user, tmp_path, capsys):
    """A loader may load fewer classes than its entry declares (a CUB folder of fewer species), labelled
    0..K-1 for its own K."""
    x_test, y_test = images(5, classes=classes, seed=1)
    write(tmp_path / "data", *images(30, classes=classes), x_test, y_test, num_classes=classes)
    with pytest.raises(AssertionError, match="Ray started"):
        user("mine", capsys)


@pytest.mark.parametrize("classes", [1, 2, 3, 10, 25, 100])
def test_the_split_needs_as_many_images_as_scikit_learn_says(classes):
    need = images_for_split(classes)
    labels = np.arange(need) % classes
    train, val = validation_split(labels, seed=0)
    assert len(val) == validation_size(need) and len(set(labels[val])) == classes
    if need > 2 * classes:  # one image less, 2 per class still: scikit-learn refuses
        with pytest.raises(ValueError, match="should be greater or equal to the number of classes"):
            validation_split(np.arange(need - 1) % classes, seed=0)
