"""trainables.cost: parameter count, MACs per image (against a hand count), inference timing."""

from __future__ import annotations

import keras
import pytest

from trainables import cost
from trainables.architectures import build_model
from trainables.config import TrialConfig
from trainables.models.basenet import build as basenet

# BaseNet on 32x32x3 with 25 classes, counted by hand (MACs per image):
#   conv1 5x5x3 -> 6, 'valid': 28x28x6 = 4,704 outputs x 75 taps    = 352,800
#   pool 2 -> 14x14x6 (max: no MACs)
#   conv2 5x5x6 -> 16, 'valid': 10x10x16 = 1,600 outputs x 150 taps = 240,000
#   pool 2 -> 5x5x16, flatten 400
#   dense 400 -> 50                                                   =  20,000
#   dense 50 -> 25                                                    =   1,250
BASENET_MACS = 352_800 + 240_000 + 20_000 + 1_250  # 614,050
# A BatchNorm after each conv, before or after its ReLU: one MAC (scale and shift) per element it
# normalises: 28x28x6 + 10x10x16.
BASENET_BN_MACS = BASENET_MACS + 4_704 + 1_600  # 620,354


@pytest.mark.parametrize(
    "bn_position, macs", [("none", BASENET_MACS), ("before_relu", BASENET_BN_MACS), ("after_relu", BASENET_BN_MACS)]
)
def test_basenet_macs_match_the_hand_count(bn_position, macs):
    model = basenet(TrialConfig(model="basenet", bn_position=bn_position), (32, 32, 3), 25)
    assert cost.macs_per_image(model) == macs
    assert cost.param_count(model) == model.count_params()


def test_convnet_macs_and_params_follow_its_layers():
    config = TrialConfig(
        model="convnet", depth=2, base_width=4, kernel_size=3, pool_after="2", bn_position="after_relu"
    )
    model = build_model(config, (12, 12, 3), 10)
    # conv 3x3x3->4: 10x10x4 x 27; bn 400; conv 3x3x4->8: 8x8x8 x 36; bn 512; pool -> 4x4x8 = 128;
    # dense 128 -> 50 (the default dense_units); dense 50 -> 10.
    units = config.dense_units
    assert cost.macs_per_image(model) == 400 * 27 + 400 + 512 * 36 + 512 + 128 * units + units * 10
    assert cost.param_count(model) == model.count_params()


def test_nested_models_and_separable_convs_are_walked():
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.SeparableConv2D(4, 3, name="sep"), keras.layers.GlobalAveragePooling2D()],
        name="backbone",
    )
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    # separable: 6x6 positions x (3 channels x 9 taps + 3 x 4 pointwise); global average 6x6x4; dense 4x2.
    assert cost.macs_per_image(model) == 36 * (27 + 12) + 144 + 8
    assert cost.param_count(model) == model.count_params()


def test_a_weighted_layer_without_a_rule_makes_the_count_unknown():
    inputs = keras.Input((4, 8))
    model = keras.Model(inputs, keras.layers.MultiHeadAttention(num_heads=1, key_dim=2)(inputs, inputs))
    with pytest.raises(cost.UncountedLayer, match="MultiHeadAttention"):
        cost.macs_per_image(model)
    fields = cost.measure(model, large_batch=4)
    assert "macs_per_image" not in fields and fields["param_count"] == model.count_params()


def test_measure_reports_every_cost_field():
    model = basenet(TrialConfig(model="basenet"), (32, 32, 3), 10)
    fields = cost.measure(model, large_batch=16)
    assert fields["macs_per_image"] == BASENET_MACS - 15 * 50  # 10 classes, not 25
    assert fields["inference_large_batch"] == 16
    assert 0 < fields["inference_s_per_image_large"] < 1 and 0 < fields["inference_s_per_image_b1"] < 1
    assert fields["inference_device"].startswith(("CPU", "GPU"))
