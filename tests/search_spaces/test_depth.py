"""The ConvNet shape sampler: its MACs count against trainables.cost on built models, and the compute cap
of the `convnet` space (every sampled shape within it, the reference shape still reachable)."""

import keras
import optuna
import pytest

from search_spaces import SPACES
from search_spaces.convnet import MAX_MACS
from search_spaces.depth import POOL_PATTERNS, REFERENCE_MACS, conv_macs, pool_patterns
from trainables import cost
from trainables.config import TrialConfig
from trainables.models import convnet

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    ("depth", "kernel_size", "pool_after", "base_width"), [(5, 3, "2,5", 16), (3, 5, "1", 8), (6, 3, "", 24)]
)
def test_conv_macs_is_the_built_models_count_without_its_dense_head(depth, kernel_size, pool_after, base_width):
    config = TrialConfig(
        model="convnet", depth=depth, kernel_size=kernel_size, pool_after=pool_after, base_width=base_width
    )
    model = convnet.build(config, (32, 32, 3), 25)
    # bn_position after_relu (the default) adds one MAC per conv output element; dense layers add theirs.
    head = sum(
        cost.layer_macs(layer)
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.BatchNormalization))
    )
    assert conv_macs(depth, kernel_size, pool_after, base_width) == cost.macs_per_image(model) - head


def test_reference_macs_is_the_reference_convnets():
    assert REFERENCE_MACS == conv_macs(5, 3, "2,5", 16) == 32_902_848


def sampled_shapes(n):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    shapes = []
    for _ in range(n):
        trial = study.ask()
        knobs = SPACES["convnet"].sample(trial)
        shapes.append((knobs["depth"], knobs["kernel_size"], knobs["pool_after"], knobs["base_width"]))
        study.tell(trial, 0.0)
    return shapes


def test_convnet_space_samples_every_depth_and_width_within_the_reference_compute():
    shapes = sampled_shapes(400)
    assert all(conv_macs(*s) <= MAX_MACS for s in shapes)
    assert {s[0] for s in shapes} == {2, 3, 4, 5, 6}
    assert {s[3] for s in shapes} == {8, 16, 24, 32}
    assert {s[1] for s in shapes} == {3, 5}
    # Some shapes sit near the cap: it narrows, it does not collapse the space to small nets.
    assert max(conv_macs(*s) for s in shapes) > 0.8 * MAX_MACS


def test_the_reference_shape_is_reachable_under_the_cap():
    assert "2,5" in pool_patterns(MAX_MACS)
    study = optuna.create_study()
    study.enqueue_trial({"pool_after": "2,5", "depth": 5, "kernel_size": 3, "base_width": 16})
    knobs = SPACES["convnet"].sample(study.ask())
    assert (knobs["depth"], knobs["kernel_size"], knobs["pool_after"], knobs["base_width"]) == (5, 3, "2,5", 16)


def test_without_a_cap_the_depth_space_keeps_its_widest_shapes():
    # The cap drops the patterns whose narrowest shape is over it; without one, every pattern stays.
    assert set(pool_patterns(MAX_MACS)) < set(pool_patterns(None)) == set(POOL_PATTERNS)
    assert conv_macs(6, 3, "", 32) > 80 * REFERENCE_MACS  # why the convnet space caps: 82x the reference
