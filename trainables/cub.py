"""CUB-200-2011 (200 bird species, 11,788 photos) from its standard `CUB_200_2011/` folder.

The index files map an image id to its file, its 1-based class and its split; the
photos are JPEGs of varying size. They are decoded, optionally cropped to the bird's
bounding box, and resized to one square size in a parallel tf.data pipeline, then
kept as uint8 like every other dataset (224x224 for all 11,788: 1.8 GB). Trials
resize batches further to their own `input_size`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainables.data import DatasetUnavailable, ImageDataset

CUB_DIRNAME = "CUB_200_2011"
CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
DEFAULT_IMAGE_SIZE = 224  # pixels per side; the reference study's input size


def load_cub200(
    data_dir: str | os.PathLike | None = None, image_size: int = DEFAULT_IMAGE_SIZE, crop_to_bbox: bool = False
) -> ImageDataset:
    """The official train/test split of CUB-200-2011, images uint8 (N, image_size, image_size, 3).

    `data_dir` may be the folder holding `CUB_200_2011/` or that folder itself; without it the
    archive is downloaded to Keras' cache. `crop_to_bbox` crops each photo to the box in
    `bounding_boxes.txt` before resizing. A missing index file or image raises
    DatasetUnavailable naming it.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    folder = find_cub_dir(data_dir)
    index = read_index(folder, with_boxes=crop_to_bbox)
    missing = [p for p in index["paths"] if not p.is_file()]
    if missing:
        raise DatasetUnavailable(
            f"CUB-200-2011 image {missing[0]} is missing ({len(missing)} of "
            f"{len(index['paths'])} images listed in {folder / 'images.txt'}); "
            "re-extract CUB_200_2011.tgz"
        )
    images = decode_images(index["paths"], image_size, index.get("boxes"))
    labels, is_train = index["labels"], index["is_train"]
    num_classes = int(labels.max()) + 1
    names = _class_names(folder, num_classes)
    return ImageDataset(
        "cub200",
        np.ascontiguousarray(images[is_train]),
        labels[is_train],
        np.ascontiguousarray(images[~is_train]),
        labels[~is_train],
        num_classes,
        names,
    )


def find_cub_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        return _keras_cub_dir()
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetUnavailable(f"--data-dir {root} does not exist")
    for candidate in (root / CUB_DIRNAME, root):
        if (candidate / "images.txt").is_file():
            return candidate
    if (root / CUB_DIRNAME).is_dir():
        return root / CUB_DIRNAME  # read_index names the missing file
    raise DatasetUnavailable(
        f"--data-dir {root} holds no {CUB_DIRNAME}/ folder with images.txt; extract CUB_200_2011.tgz ({CUB_URL}) there"
    )


def _keras_cub_dir() -> Path:
    """Keras' cache (~/.keras/datasets), downloading and extracting the 1.1 GB archive on first use."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    for candidate in (cache / CUB_DIRNAME / CUB_DIRNAME, cache / CUB_DIRNAME):
        if (candidate / "images.txt").is_file():
            return candidate
    try:
        import keras

        # cache_dir explicit: Keras reads KERAS_HOME once at import, this module at each call.
        path = Path(keras.utils.get_file(CUB_DIRNAME, origin=CUB_URL, extract=True, cache_dir=str(cache.parent)))
    except Exception as e:  # noqa: BLE001 - any download failure means the same to the user
        raise DatasetUnavailable(
            f"CUB-200-2011 is not in Keras' cache and could not be downloaded from "
            f"{CUB_URL} ({type(e).__name__}: {e}); download it and pass --data-dir"
        ) from None
    return path / CUB_DIRNAME if (path / CUB_DIRNAME).is_dir() else path


def _read_table(path: Path, columns: int) -> list[list[str]]:
    """Rows of a whitespace-separated index file, each split into `columns` fields (the id first)."""
    if not path.is_file():
        raise DatasetUnavailable(f"missing CUB-200-2011 index file {path}; re-extract CUB_200_2011.tgz")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) != columns:
            raise DatasetUnavailable(f"{path} line {number}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    return rows


def read_index(folder: Path, with_boxes: bool = False) -> dict[str, np.ndarray]:
    """Image paths, 0-based labels, train mask and (optionally) boxes, in image-id order."""
    files = {int(i): f for i, f in _read_table(folder / "images.txt", 2)}
    labels = {int(i): int(c) - 1 for i, c in _read_table(folder / "image_class_labels.txt", 2)}
    split = {int(i): s == "1" for i, s in _read_table(folder / "train_test_split.txt", 2)}
    ids = sorted(files)
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        absent = [i for i in ids if i not in table]
        if absent:
            raise DatasetUnavailable(
                f"{folder / name} has no entry for image id {absent[0]} "
                f"({len(absent)} ids missing); re-extract CUB_200_2011.tgz"
            )
    index = {
        "paths": np.array([folder / "images" / files[i] for i in ids], dtype=object),
        "labels": np.array([labels[i] for i in ids], dtype=np.int32),
        "is_train": np.array([split[i] for i in ids], dtype=bool),
    }
    if index["labels"].min() < 0:
        raise DatasetUnavailable(f"{folder / 'image_class_labels.txt'}: class labels must start at 1")
    if with_boxes:
        boxes = {int(r[0]): [float(v) for v in r[1:]] for r in _read_table(folder / "bounding_boxes.txt", 5)}
        absent = [i for i in ids if i not in boxes]
        if absent:
            raise DatasetUnavailable(f"{folder / 'bounding_boxes.txt'} has no box for image id {absent[0]}")
        index["boxes"] = np.array([boxes[i] for i in ids], dtype=np.float32)  # x, y, width, height (px)
    return index


def decode_images(paths: np.ndarray, image_size: int, boxes: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, image_size, image_size, 3): decode (greyscale -> RGB), crop, resize, in parallel."""
    import tensorflow as tf

    path_strings = [str(p) for p in paths]
    if boxes is None:
        boxes = np.zeros((len(paths), 4), dtype=np.float32)
        crop = False
    else:
        crop = True

    def load(path: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        if crop:
            image = crop_to_box(image, box)
        # Antialiasing keeps downscaled photos (typically 500 px -> 224 px) free of aliasing.
        resized = tf.image.resize(image, (image_size, image_size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    ds = tf.data.Dataset.from_tensor_slices((path_strings, boxes))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    start = 0
    iterator = iter(ds)
    while start < len(paths):
        try:
            batch = next(iterator).numpy()
        except tf.errors.InvalidArgumentError as e:
            bad = _first_undecodable(path_strings[start : start + 256])
            raise DatasetUnavailable(
                f"CUB-200-2011 image {bad or path_strings[start]} cannot be decoded as "
                f"JPEG ({e.message.splitlines()[0]}); re-extract CUB_200_2011.tgz"
            ) from None
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def crop_to_box(image, box):  # noqa: ANN001, ANN201 - tf.Tensor (H, W, 3), (4,) float -> tf.Tensor
    """Crop to the (x, y, width, height) box in pixels, clipped to the image, at least 1x1."""
    import tensorflow as tf

    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    x0 = tf.clip_by_value(tf.cast(tf.floor(box[0]), tf.int32), 0, width - 1)
    y0 = tf.clip_by_value(tf.cast(tf.floor(box[1]), tf.int32), 0, height - 1)
    x1 = tf.clip_by_value(tf.cast(tf.math.ceil(box[0] + box[2]), tf.int32), x0 + 1, width)
    y1 = tf.clip_by_value(tf.cast(tf.math.ceil(box[1] + box[3]), tf.int32), y0 + 1, height)
    return image[y0:y1, x0:x1]


def _first_undecodable(paths: list[str]) -> str | None:
    import tensorflow as tf

    for path in paths:
        try:
            tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        except tf.errors.InvalidArgumentError:
            return path
    return None


def _class_names(folder: Path, num_classes: int) -> tuple[str, ...]:
    path = folder / "classes.txt"
    if not path.is_file():
        return ()  # cosmetic; the loader does not need it
    names = [name for _, name in _read_table(path, 2)]
    return tuple(names[:num_classes])
