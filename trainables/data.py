"""Datasets as uint8 image arrays, loaded once by the driver and shared with every trial.

Images stay uint8 (N, H, W, 3) until a batch is formed inside the trial's tf.data
pipeline: a CIFAR-100 (25 classes) training split is 38 MB this way, four times
less than float32, and Ray's object store hands it to trials without a copy.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from trainables import registry

CIFAR_DIRNAME = "cifar-100-python"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits test split never depends on the trial seed
# Of the training split, held out (stratified, fixed by the trial's seed) for every search decision.
VALIDATION_FRACTION = 0.1


class DatasetUnavailable(Exception):
    """The dataset cannot be found or read; the message says what to do (exit 2)."""


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    name: str
    x_train: np.ndarray  # uint8 (N, H, W, 3)
    y_train: np.ndarray  # int32 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_train, self.y_train, self.x_test, self.y_test))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> ImageDataset:
    """Load a registered dataset (trainables.registry); raise DatasetUnavailable with the fix when it
    cannot be read. `options` go to its loader (cub200: `image_size`, `crop_to_bbox`)."""
    try:
        entry = registry.dataset(name)
    except ValueError as e:
        raise DatasetUnavailable(str(e)) from None
    return entry.load(data_dir, **options)


def load_digits() -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), upsampled to 32x32x3.

    Offline and small: the dataset for demos and end-to-end tests.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    # Pixel values are 0..16; x16 (capped at 255) spans uint8, x4 nearest-neighbour upsampling gives 32x32.
    images = np.minimum(bunch.images * 16, 255).astype(np.uint8)
    images = images.repeat(4, axis=1).repeat(4, axis=2)
    images = np.repeat(images[..., None], 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return ImageDataset(
        "digits",
        np.ascontiguousarray(x_tr),
        y_tr,
        np.ascontiguousarray(x_te),
        y_te,
        10,
        tuple(str(d) for d in range(10)),
    )


# --- CIFAR-100 -------------------------------------------------------------------------------


class SafeUnpickler(pickle.Unpickler):
    """Admits only numpy arrays, lists, dicts, strings and bytes: a pickle that names any
    other callable (os.system, eval, ...) is refused before it runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of numpy >= 1.16
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused: the pickle wants to call {module}.{name}")


def safe_unpickle(data: bytes) -> object:
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


def _read_cifar_split(path: Path) -> dict:
    if not path.is_file():
        raise DatasetUnavailable(f"missing CIFAR-100 file {path}")
    try:
        payload = safe_unpickle(path.read_bytes())
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused"):
            raise DatasetUnavailable(
                f"{path} is not a plain CIFAR-100 pickle ({e}); it was not loaded. Re-download the dataset"
            ) from None
        raise DatasetUnavailable(f"{path} is truncated or corrupted ({e}); re-download the dataset") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OSError) as e:
        raise DatasetUnavailable(
            f"{path} is truncated or corrupted ({type(e).__name__}: {e}); re-download the dataset"
        ) from None
    if not isinstance(payload, dict):
        raise DatasetUnavailable(f"{path} does not hold a CIFAR-100 dict")
    payload = {k.decode() if isinstance(k, bytes) else k: v for k, v in payload.items()}
    missing = {"data", "fine_labels"} - set(payload)
    if missing:
        raise DatasetUnavailable(f"{path} lacks the keys {sorted(missing)} of a CIFAR-100 split")
    return payload


def cifar_rows_to_images(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) rows holding the red, green and blue 32x32 planes in turn -> (N, 32, 32, 3)."""
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32:
        raise DatasetUnavailable(f"CIFAR rows must be (N, 3072), got {rows.shape}")
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def find_cifar_dir(data_dir: str | os.PathLike | None) -> Path:
    """`data_dir` may be the folder holding `cifar-100-python/` or that folder itself."""
    if data_dir is None:
        return _keras_cifar_dir()
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetUnavailable(f"--data-dir {root} does not exist")
    for candidate in (root / CIFAR_DIRNAME, root):
        if (candidate / "train").is_file() and (candidate / "test").is_file():
            return candidate
    raise DatasetUnavailable(f"--data-dir {root} holds no {CIFAR_DIRNAME}/ with 'train' and 'test' files")


def _keras_cifar_dir() -> Path:
    """Keras' cache (~/.keras/datasets), downloading the archive there on first use."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    for candidate in (cache / CIFAR_DIRNAME, cache / "cifar-100-python"):
        if (candidate / "train").is_file():
            return candidate
    try:
        import keras

        path = keras.utils.get_file("cifar-100-python", origin=CIFAR_URL, untar=True)
    except Exception as e:  # noqa: BLE001 - any download failure means the same to the user
        raise DatasetUnavailable(f"CIFAR-100 is not in Keras' cache and could not be downloaded ({e})") from None
    path = Path(path)
    return path / CIFAR_DIRNAME if (path / CIFAR_DIRNAME).is_dir() else path


def load_cifar100(data_dir: str | os.PathLike | None, num_classes: int = 100, name: str = "cifar100") -> ImageDataset:
    """CIFAR-100 fine labels; `num_classes=25` keeps fine classes 0..24 as the reference study does."""
    folder = find_cifar_dir(data_dir)
    splits = []
    for split in ("train", "test"):
        payload = _read_cifar_split(folder / split)
        labels = np.asarray(payload["fine_labels"], dtype=np.int32)
        images = cifar_rows_to_images(payload["data"])
        if len(labels) != len(images):
            raise DatasetUnavailable(f"{folder / split}: {len(images)} images but {len(labels)} labels")
        keep = labels < num_classes
        splits.append((np.ascontiguousarray(images[keep]), labels[keep]))
    names: tuple[str, ...] = ()
    if (folder / "meta").is_file():
        try:
            meta: Any = safe_unpickle((folder / "meta").read_bytes())
            fine = meta.get("fine_label_names") or meta.get(b"fine_label_names") or []
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in fine[:num_classes])
        except Exception:  # noqa: BLE001 - class names are cosmetic
            names = ()
    (x_tr, y_tr), (x_te, y_te) = splits
    present = np.unique(y_tr)
    if len(present) < num_classes:
        raise DatasetUnavailable(
            f"{folder}: training split has {len(present)} of the {num_classes} "
            f"classes {name} needs; use --dataset cifar100_25 for classes 0..24"
        )
    return ImageDataset(name, x_tr, y_tr, x_te, y_te, num_classes, names)


def validation_size(n: int, fraction: float = VALIDATION_FRACTION) -> int:
    """Images of `n` that validation_split holds out: scikit-learn's rule for a fractional test_size
    (rounded up, after the float product: 0.1 * 30 holds out 4)."""
    return math.ceil(fraction * n)


def images_for_split(num_classes: int, fraction: float = VALIDATION_FRACTION) -> int:
    """The fewest training images validation_split can split with each of `num_classes` classes on
    both sides (scikit-learn refuses a side smaller than the number of classes), 2 per class at least."""
    n = 2 * num_classes
    while min(validation_size(n, fraction), n - validation_size(n, fraction)) < num_classes:
        n += 1
    return n


def validation_split(
    labels: np.ndarray, seed: int, fraction: float = VALIDATION_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): a stratified hold-out of `fraction`, fixed by the trial's seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)
