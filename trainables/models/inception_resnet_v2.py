"""InceptionResNetV2 (ImageNet weights, no top, global average pooling) + the study's head; its stem needs
at least 75x75 pixels (keras.applications)."""

from trainables.registry import register_model
from trainables.transfer import backbone_entry

MODEL = register_model(
    backbone_entry(
        "inception_resnet_v2",
        "inception_resnet_v2",
        "InceptionResNetV2",
        min_input_size=75,
        description="InceptionResNetV2 backbone + dense head (transfer learning)",
    )
)
