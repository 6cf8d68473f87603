"""CUB-200-2011 (200 bird species), 224x224 by default; trainables.cub reads its standard folder."""

from __future__ import annotations

import os
from typing import Any

from trainables.registry import Dataset, register_dataset


def load(data_dir: str | os.PathLike | None = None, image_size: int | None = None, crop_to_bbox: bool = False) -> Any:
    from trainables import cub  # imports TensorFlow to decode JPEGs: only when loaded

    return cub.load_cub200(data_dir, image_size=image_size or cub.DEFAULT_IMAGE_SIZE, crop_to_bbox=crop_to_bbox)


DATASET = register_dataset(
    Dataset(
        "cub200",
        load=load,
        image_shape=(224, 224, 3),
        num_classes=200,
        description="CUB-200-2011 birds, 224x224 (transfer learning)",
    )
)
