"""scikit-learn's bundled 8x8 digits, upsampled to 32x32x3: offline and small, for demos and tests."""

from trainables.data import load_digits
from trainables.registry import Dataset, register_dataset

DATASET = register_dataset(
    Dataset(
        "digits",
        load=lambda _data_dir=None: load_digits(),
        image_shape=(32, 32, 3),
        num_classes=10,
        description="bundled 8x8 digits upsampled to 32x32 (offline)",
    )
)
