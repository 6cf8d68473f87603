"""CIFAR-100 fine labels (32x32 RGB); `cifar100_25` keeps fine classes 0..24 as the reference study does."""

from trainables.data import load_cifar100
from trainables.registry import Dataset, register_dataset

FULL = register_dataset(
    Dataset(
        "cifar100",
        load=lambda data_dir=None: load_cifar100(data_dir, num_classes=100, name="cifar100"),
        image_shape=(32, 32, 3),
        num_classes=100,
        description="CIFAR-100, 100 fine classes",
    )
)
FIRST_25 = register_dataset(
    Dataset(
        "cifar100_25",
        load=lambda data_dir=None: load_cifar100(data_dir, num_classes=25, name="cifar100_25"),
        image_shape=(32, 32, 3),
        num_classes=25,
        description="CIFAR-100 fine classes 0..24 (the reference study)",
    )
)
