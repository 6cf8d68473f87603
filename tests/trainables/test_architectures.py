import pytest

from trainables.architectures import build_model, build_optimizer
from trainables.config import TrialConfig
from trainables.models.basenet import build as basenet
from trainables.models.convnet import build as convnet


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_basenet_has_the_reference_parameter_count():
    model = basenet(TrialConfig(model="basenet"), (32, 32, 3), 25)
    assert model.count_params() == 24_197
    assert _kinds(model) == [
        "Conv2D",
        "ReLU",
        "MaxPooling2D",
        "Conv2D",
        "ReLU",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
    ]


@pytest.mark.parametrize(
    "bn_position, block, params",
    [
        ("none", ["Conv2D", "ReLU"], 24_197),
        # No conv bias before a BN (-6 -16), each BN 4 x filters (+88).
        ("before_relu", ["Conv2D", "BatchNormalization", "ReLU"], 24_197 - 22 + 88),
        ("after_relu", ["Conv2D", "ReLU", "BatchNormalization"], 24_197 + 88),
    ],
)
def test_basenet_layer_order_per_bn_position(bn_position, block, params):
    model = basenet(TrialConfig(model="basenet", bn_position=bn_position), (32, 32, 3), 25)
    assert _kinds(model) == [*block, "MaxPooling2D", *block, "MaxPooling2D", "Flatten", "Dense", "Dense"]
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [6, 16] and all(c.kernel_size == (5, 5) for c in convs)
    assert all(c.use_bias == (bn_position != "before_relu") for c in convs)
    assert model.count_params() == params


def test_each_model_defaults_to_the_reference_network():
    assert TrialConfig(model="basenet").bn_position == "none"
    assert TrialConfig(model="convnet").bn_position == "after_relu"  # the study's improved ConvNet
    assert TrialConfig(model="convnet", bn_position="none").bn_position == "none"


@pytest.mark.parametrize(
    "bn_position, block",
    [
        ("none", ["Conv2D", "ReLU"]),
        ("before_relu", ["Conv2D", "BatchNormalization", "ReLU"]),
        ("after_relu", ["Conv2D", "ReLU", "BatchNormalization"]),
    ],
)
def test_convnet_layer_order_per_bn_position(bn_position, block):
    model = convnet(TrialConfig(bn_position=bn_position), (32, 32, 3), 25)
    blocks = [block] * 5
    blocks[1] = block + ["MaxPooling2D"]  # pools after the 2nd and 5th conv
    blocks[4] = block + ["MaxPooling2D"]
    expected = [k for b in blocks for k in b] + ["Flatten", "Dense", "Dense"]
    assert _kinds(model) == expected
    filters = [layer.filters for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert filters == [16, 32, 64, 128, 256]
    assert all(layer.padding == "valid" for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert model.layers[-2].units == 50 and model.layers[-1].units == 25
    assert model.output_shape == (None, 25)


def test_convnet_is_a_pure_function_of_the_config():
    config = TrialConfig(depth=3, base_width=8, kernel_size=5, pool_after="1", bn_position="after_relu")
    a, b = convnet(config, (32, 32, 3), 10), convnet(config, (32, 32, 3), 10)
    assert _kinds(a) == _kinds(b) and a.count_params() == b.count_params()


def test_convnet_refuses_a_map_shrinking_below_one_pixel():
    with pytest.raises(ValueError, match="shrinks a 32px image"):
        convnet(TrialConfig(depth=6, kernel_size=5, pool_after="1,2,3"), (32, 32, 3), 10)


@pytest.mark.parametrize(
    "config",
    [TrialConfig(model="basenet"), TrialConfig(), TrialConfig(depth=3, kernel_size=5, pool_after="1,3")],
    ids=["basenet", "convnet", "convnet_k5"],
)
def test_a_models_declared_smallest_input_is_what_keras_builds(config):
    """The declaration the driver checks datasets against (registry.Model.min_input_size) is the truth:
    the model builds at that side and Keras (or the builder) refuses one pixel less."""
    from trainables import registry

    least = registry.model(config.model).smallest_input(config)
    assert build_model(config, (least, least, 1), 10).output_shape == (None, 10)
    with pytest.raises(ValueError, match="negative|shrinks"):
        build_model(config, (least - 1, least - 1, 1), 10)


def test_build_model_dispatches_on_model():
    assert build_model(TrialConfig(model="basenet"), (32, 32, 3), 25).name == "basenet"
    assert build_model(TrialConfig(model="convnet"), (32, 32, 3), 25).name == "convnet"


@pytest.mark.parametrize("name, cls", [("sgd", "SGD"), ("adam", "Adam")])
def test_optimizer_follows_the_config(name, cls):
    opt = build_optimizer(TrialConfig(optimizer=name, learning_rate=0.003, momentum=0.9, nesterov=True))
    assert type(opt).__name__ == cls
    assert float(opt.learning_rate) == pytest.approx(0.003)
    if name == "sgd":
        assert opt.momentum == 0.9 and opt.nesterov
