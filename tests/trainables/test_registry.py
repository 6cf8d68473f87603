"""Registries: built-in entries, declared knobs as validated config fields, nulls where not read."""

import pytest

from trainables import registry
from trainables.config import TrialConfig, knob_types
from trainables.registry import Knob, Model, RegistryError


def test_built_in_entries_are_registered_from_their_own_files():
    assert {"basenet", "convnet", "resnet50", "inception_resnet_v2"} <= set(registry.model_names())
    assert {"digits", "cifar100_25", "cifar100", "cub200"} <= set(registry.dataset_names())
    assert registry.model("convnet").defaults == {"bn_position": "after_relu"}
    assert registry.model("resnet50").preprocess is not None and registry.model("basenet").preprocess is None


def test_unknown_model_and_dataset_name_the_known_ones():
    with pytest.raises(ValueError, match=r"model must be one of \[.*'basenet'"):
        TrialConfig(model="vgg99")
    with pytest.raises(ValueError, match=r"dataset must be one of \[.*'digits'"):
        TrialConfig(dataset="mnist")


def test_a_model_says_why_it_cannot_take_a_datasets_images():
    basenet, resnet = registry.model("basenet"), registry.model("resnet50")
    assert basenet.refusal(TrialConfig(model="basenet"), (8, 8, 1)) == "needs images of at least 16x16 pixels"
    assert basenet.refusal(TrialConfig(model="basenet"), (16, 16, 3)) is None
    assert registry.model("convnet").refusal(TrialConfig(), (19, 19, 3)) == "needs images of at least 20x20 pixels"
    # A backbone is fed input_size pixels whatever the dataset's side, but only RGB.
    config = TrialConfig(model="resnet50", input_size=32)
    assert resnet.refusal(config, (8, 8, 3)) is None
    assert resnet.refusal(config, (32, 32, 1)) == "takes images of 3 channels only"
    assert Model("any", build=print).refusal(config, (1, 1, 1)) is None  # a plugin's model declares nothing


@pytest.fixture
def declared(isolated_registry):
    registry.register_model(Model("toy", build=print, knobs=("dense_units",)))
    registry.register_knob(Knob("toy_width", "float", 1.0, models=("toy",), low=0.25, high=2.0))
    registry.register_knob(Knob("toy_act", "str", "relu", models=("toy",), choices=("relu", "gelu")))
    return registry


def test_declared_knobs_join_the_config_validated_and_typed(declared):
    config = TrialConfig.from_params({"model": "toy", "toy_width": 2, "toy_act": "gelu"})
    assert config.toy_width == 2.0 and type(config.toy_width) is float and config.toy_act == "gelu"
    assert TrialConfig(model="toy").toy_width == 1.0  # the declaration's default
    assert knob_types()["toy_width"] is float and knob_types()["toy_act"] is str
    with pytest.raises(ValueError, match="toy_width must be <= 2.0"):
        TrialConfig.from_params({"model": "toy", "toy_width": 3.0})
    with pytest.raises(ValueError, match="toy_act must be one of"):
        TrialConfig.from_params({"model": "toy", "toy_act": "tanh"})
    with pytest.raises(ValueError, match=r"unknown config keys \['toy_depth'\]"):
        TrialConfig.from_params({"model": "toy", "toy_depth": 3})


def test_a_knob_is_null_in_the_rows_of_models_that_do_not_read_it(declared):
    toy = TrialConfig.from_params({"model": "toy", "toy_width": 0.5}).to_row()
    base = TrialConfig.from_params({"model": "basenet"}).to_row()
    assert toy["toy_width"] == 0.5 and toy["dense_units"] == 50 and toy["depth"] is None
    assert base["toy_width"] is None and base["toy_act"] is None and base["bn_position"] == "none"


@pytest.mark.parametrize(
    "knob, message",
    [
        (lambda: Knob("w", "complex", 1.0), "unknown type 'complex'"),
        (lambda: Knob("depth", "int", 3), "built-in knob"),
        (lambda: Knob("w", "int", 3, models=("nonet",)), "unknown models"),
        (lambda: Knob("w", "int", 9, high=4), "w must be <= 4"),
        (lambda: Knob("class", "int", 1), "not a Python identifier"),
    ],
)
def test_bad_knob_declarations_are_refused(knob, message, isolated_registry):
    with pytest.raises(RegistryError if message != "w must be <= 4" else ValueError, match=message):
        registry.register_knob(knob())


def test_a_name_registered_twice_is_refused(isolated_registry):
    with pytest.raises(RegistryError, match="'convnet' is already registered"):
        registry.register_model(Model("convnet", build=print))


def test_recorded_declarations_rebuild_the_registry_without_the_plugin(declared):
    recorded = registry.plugin_declarations()
    assert [k["name"] for k in recorded["knobs"]] == [] and recorded["models"] == {}  # registered as built-in
    with registry.registering_from("/plugins/toy.py"):
        registry.register_model(Model("toy2", build=print, knobs=("dense_units",)))
        registry.register_knob(Knob("toy2_depth", "int", 2, models=("toy2",)))
    recorded = registry.plugin_declarations()
    assert recorded["models"]["toy2"]["origin"] == "/plugins/toy.py"
    del registry.MODELS["toy2"], registry.KNOBS["toy2_depth"]
    knobs = registry.declare_recorded(recorded)
    assert [k.name for k in knobs] == ["toy2_depth"] and registry.model("toy2").knobs == ("dense_units",)
    assert TrialConfig.from_params({"model": "toy2", "toy2_depth": 3}).to_row()["toy2_depth"] == 3
