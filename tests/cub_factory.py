"""A tiny CUB-200-2011 folder in the real distribution format, written for tests.

The layout matches the archive from data.caltech.edu: `CUB_200_2011/` holding
`images.txt` ("<id> <class dir>/<file>.jpg"), `image_class_labels.txt`
("<id> <1-based label>"), `train_test_split.txt` ("<id> <1 = train, 0 = test>"),
`classes.txt`, `bounding_boxes.txt` ("<id> <x> <y> <width> <height>", pixels)
and `images/<class dir>/<file>.jpg`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_cub_folder(
    root: str | Path,
    n_classes: int = 3,
    per_class: int = 14,
    size: int = 48,
    train_per_class: int | None = None,
    seed: int = 0,
    width: int | None = None,
) -> Path:
    """Write `root/CUB_200_2011/` with `n_classes * per_class` JPEGs of `size` rows by `width`
    (default `size`) columns; real CUB photos are not square, so tests may pass a `width`.

    The first `train_per_class` images of each class (default: two thirds, at least one) are
    marked train, the rest test. Each class has its own base colour, so a model can tell
    them apart; each image has a bright square in its bounding box, so cropping changes it.
    The default 14 per class (9 train) leaves the trial's stratified 10 % validation split at
    least one image per class (sklearn refuses fewer validation images than classes).
    Returns the `CUB_200_2011` folder.
    """
    rng = np.random.default_rng(seed)
    cols = width or size
    folder = Path(root) / "CUB_200_2011"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if train_per_class is None:
        train_per_class = max(1, (2 * per_class) // 3)
    images, labels, split, boxes, classes = [], [], [], [], []
    image_id = 0
    for c in range(n_classes):
        class_dir = f"{c + 1:03d}.Bird_{c + 1}"
        classes.append(f"{c + 1} {class_dir}")
        (folder / "images" / class_dir).mkdir(exist_ok=True)
        base = rng.integers(0, 160, size=3)
        for i in range(per_class):
            image_id += 1
            pixels = np.clip(base + rng.integers(0, 40, size=(size, cols, 3)), 0, 255).astype(np.uint8)
            # A box of the inverse colour in the upper-left quadrant: the bird the bounding box frames.
            x, y = int(rng.integers(0, cols // 4)), int(rng.integers(0, size // 4))
            w, h = cols // 2, size // 2
            pixels[y : y + h, x : x + w] = 255 - base
            name = f"{class_dir}/Bird_{c + 1}_{i:04d}.jpg"
            Image.fromarray(pixels).save(folder / "images" / name, quality=95)
            images.append(f"{image_id} {name}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {1 if i < train_per_class else 0}")
            boxes.append(f"{image_id} {float(x)} {float(y)} {float(w)} {float(h)}")
    for filename, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
        ("classes.txt", classes),
    ):
        (folder / filename).write_text("\n".join(lines) + "\n")
    return folder
