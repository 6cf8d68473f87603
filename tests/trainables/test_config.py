import dataclasses

import pytest

from trainables.config import TrialConfig, conv_feature_sizes, knob_types, min_image_size


def test_defaults_are_the_reference_convnet():
    config = TrialConfig()
    assert (config.model, config.depth, config.base_width, config.kernel_size) == ("convnet", 5, 16, 3)
    assert config.pools == (2, 5)
    assert config.bn_position == "after_relu" and config.augmentation == "simple"


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown config keys \['bn_positon', 'lr'\]"):
        TrialConfig.from_params({"bn_positon": "none", "lr": 0.1, "optimizer": "adam"})


def test_from_params_coerces_search_types():
    import numpy as np

    config = TrialConfig.from_params(
        {
            "learning_rate": np.float32(0.5),
            "batch_size": np.int64(64),
            "depth": 4.0,
            "nesterov": np.bool_(True),
            "pool_after": "2,4",
        }
    )
    assert type(config.learning_rate) is float and type(config.batch_size) is int
    assert config.depth == 4 and config.nesterov is True


@pytest.mark.parametrize(
    "params, message",
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"bn_position": "middle"}, "bn_position must be one of"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"depth": 2, "pool_after": "2,5"}, "outside 1..depth=2"),
        ({"depth": 2.5}, "depth must be an integer"),
        ({"model": "inception_resnet_v2", "input_size": 64}, "needs input_size >= 75"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"lr_schedule": "cosine", "warmup_epochs": -1}, "warmup_epochs must be >= 0"),
        ({"warmup_epochs": 2}, "warmup_epochs needs lr_schedule cosine or step"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"augmentation": "crop"}, "augmentation must be one of"),
    ],
)
def test_invalid_values_fail_loudly(params, message):
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_params(params)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrialConfig().learning_rate = 1.0  # type: ignore[misc]


def test_knob_types_cover_every_field():
    types = knob_types()
    assert list(types) == [f.name for f in dataclasses.fields(TrialConfig) if f.name != "extra"]
    assert types["learning_rate"] is float and types["nesterov"] is bool and types["depth"] is int


def test_conv_feature_sizes_of_the_reference_convnet():
    # 32 -> 30 -> 28 -> pool 14 -> 12 -> 10 -> 8 -> pool 4
    assert conv_feature_sizes(TrialConfig(), 32) == [30, 14, 12, 10, 4]
    assert min(conv_feature_sizes(TrialConfig(depth=6, kernel_size=5, pool_after="1,2"), 32)) < 1


@pytest.mark.parametrize(
    "shape",
    [{}, {"depth": 2, "pool_after": "2"}, {"depth": 6, "kernel_size": 5, "pool_after": "1,2,3"}, {"pool_after": ""}],
)
def test_min_image_size_is_the_smallest_side_conv_feature_sizes_keeps_at_one_pixel(shape):
    config = TrialConfig(**shape)
    least = min_image_size(config)
    assert min(conv_feature_sizes(config, least)) >= 1
    assert min(conv_feature_sizes(config, least - 1)) < 1
    assert min_image_size(TrialConfig()) == 20  # 20 -> 18 -> 16, pool 8 -> 6 -> 4 -> 2, pool 1


def test_new_knobs_are_null_where_nothing_reads_them():
    constant = TrialConfig(model="basenet").to_row()
    assert constant["lr_schedule"] == "constant" and constant["warmup_epochs"] is None  # no warm-up to read
    assert constant["label_smoothing"] == 0.0  # always read: 0 is the loss it trained with
    cosine = TrialConfig(model="basenet", lr_schedule="cosine", warmup_epochs=2, label_smoothing=0.1).to_row()
    assert (cosine["warmup_epochs"], cosine["label_smoothing"]) == (2, 0.1)
    assert TrialConfig(model="basenet", lr_schedule="step").to_row()["warmup_epochs"] == 0
    crop = TrialConfig(model="basenet", augmentation="crop_flip").to_row()
    assert crop["flip"] is None and crop["zoom_range"] is None and crop["zca_epsilon"] is None


def test_a_null_warmup_from_a_table_row_rebuilds_the_constant_config():
    row = TrialConfig(model="basenet").to_row()
    assert TrialConfig.from_params({k: v for k, v in row.items()}) == TrialConfig(model="basenet")
