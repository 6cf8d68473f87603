"""ResNet50 (ImageNet weights, no top, global average pooling) + the study's head; trainables.transfer."""

from trainables.registry import register_model
from trainables.transfer import backbone_entry

MODEL = register_model(
    backbone_entry(
        "resnet50",
        "resnet50",
        "ResNet50",
        min_input_size=32,
        description="ResNet50 backbone + dense head (transfer learning)",
    )
)
