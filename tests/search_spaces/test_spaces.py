"""Every registered space: 50 sampled configs are valid TrialConfigs, and no space imports TensorFlow."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search_spaces import SPACES
from search_spaces.base import IMAGE_SIZE
from trainables import registry
from trainables.config import TrialConfig, conv_feature_sizes

PROJECT = Path(__file__).resolve().parents[2]
# The built-in spaces, each a module of its own; the registry must name exactly these.
SPACE_NAMES = [
    "basenet",
    "batchnorm",
    "depth",
    "augmentation",
    "learning_rate",
    "convnet",
    "transfer",
    "reference",
    "reference_cub",
]
# The space modules, and the Tune side's searchers and schedulers, which run in the driver: no TensorFlow.
MODULES = [
    *(f"search_spaces.{m}" for m in (*SPACE_NAMES, "base", "training")),
    "tuning.optuna_search",
    "tuning.schedulers",
]
N = 50

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled_configs(space, sampler, n=N):
    """n configs from a real Optuna study; TPE is told a score so it leaves its random start-up."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    configs = []
    for i in range(n):
        trial = study.ask()
        knobs = space.sample(trial)
        configs.append((trial.params, knobs))
        study.tell(trial, (i * 7919 % 101) / 100)  # a deterministic, uneven score
    return configs


def test_registry_names_every_space_by_its_own_name():
    assert set(SPACES) == set(SPACE_NAMES)
    for name, space in SPACES.items():
        assert space.name == name
        assert space.dataset in registry.dataset_names() and space.num_samples >= 1 and space.max_epochs >= 1


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("name", sorted(SPACES))
def test_fifty_sampled_configs_are_valid_trial_configs(name, sampler):
    space = SPACES[name]
    make = optuna.samplers.RandomSampler if sampler == "random" else optuna.samplers.TPESampler
    for params, knobs in sampled_configs(space, make(seed=3)):
        # Optuna parameter names are TrialConfig fields (from_params fails loudly on any other).
        config = TrialConfig.from_params({**knobs, "dataset": space.dataset})
        assert set(params) <= set(knobs)
        if config.model == "convnet":
            assert min(conv_feature_sizes(config, IMAGE_SIZE)) >= 1, config


@pytest.mark.parametrize("module", MODULES)
def test_space_module_does_not_import_tensorflow(module):
    code = (
        f"import sys, {module}; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_depth_space_covers_its_range_without_ever_shrinking_below_one_pixel():
    sampled = sampled_configs(SPACES["depth"], optuna.samplers.RandomSampler(seed=0), 300)
    configs = [TrialConfig.from_params(k) for _, k in sampled]
    assert {c.depth for c in configs} == {2, 3, 4, 5, 6}
    assert {c.kernel_size for c in configs} == {3, 5}
    assert {len(c.pools) for c in configs} == {0, 1, 2}
    assert {c.base_width for c in configs} == {8, 16, 32}
    assert all(min(conv_feature_sizes(c, IMAGE_SIZE)) >= 1 for c in configs)
    # Deep stacks with 5x5 kernels are sampled too, where they fit.
    assert any(c.depth == 6 and c.kernel_size == 5 for c in configs)


def test_augmentation_knobs_are_sampled_only_under_their_policy():
    for params, _ in sampled_configs(SPACES["augmentation"], optuna.samplers.RandomSampler(seed=1), 100):
        policy = params["augmentation"]
        assert ("flip" in params) == ("zoom_range" in params) == (policy == "complex")
        assert ("zca_epsilon" in params) == (policy == "whitening")


def test_momentum_and_nesterov_only_under_sgd():
    for name in ("learning_rate", "convnet"):
        for params, _ in sampled_configs(SPACES[name], optuna.samplers.RandomSampler(seed=2), 60):
            assert ("momentum" in params) == ("nesterov" in params) == (params["optimizer"] == "sgd")


def test_transfer_space_samples_backbones_and_modes_on_cub_with_a_gpu_each():
    space = SPACES["transfer"]
    assert space.dataset == "cub200" and space.gpus_per_trial == 1
    configs = [TrialConfig.from_params(k) for _, k in sampled_configs(space, optuna.samplers.RandomSampler(seed=0))]
    assert {c.model for c in configs} == {"resnet50", "inception_resnet_v2"}
    assert {c.transfer_mode for c in configs} == {"extract", "finetune"}
    assert {c.head_units for c in configs} == {500, 1024}


def test_reference_grid_is_exactly_the_studys_six_cifar_cells():
    cells = SPACES["reference"].cells()
    configs = [TrialConfig.from_params(c) for c in cells]
    assert [(c.model, c.bn_position, c.augmentation) for c in configs] == [
        ("basenet", "none", "simple"),
        ("basenet", "before_relu", "simple"),
        ("basenet", "after_relu", "simple"),
        ("convnet", "after_relu", "simple"),
        ("convnet", "after_relu", "complex"),
        ("convnet", "after_relu", "whitening"),
    ]
    assert all(
        c.optimizer == "sgd" and c.learning_rate == 0.01 and c.momentum == 0.0 and c.batch_size == 32 for c in configs
    )
    assert SPACES["reference"].max_epochs == 30 and SPACES["reference"].dataset == "cifar100_25"
    # The policies run at the study's settings: flips both ways, 20 % zoom.
    complex_cell = next(c for c in configs if c.augmentation == "complex")
    assert complex_cell.flip == "horizontal_and_vertical" and complex_cell.zoom_range == 0.2
    # The knobs beyond the study stay at the study's settings: a constant rate, no smoothing.
    assert all(c.lr_schedule == "constant" and c.label_smoothing == 0.0 and c.weight_decay == 0.0 for c in configs)
    assert all(set(cell) == {"model", "bn_position", "augmentation", *REFERENCE_SETTINGS} for cell in cells)


REFERENCE_SETTINGS = ("optimizer", "learning_rate", "momentum", "batch_size")


@pytest.mark.parametrize("name", ["basenet", "convnet"])
def test_modern_spaces_sample_the_recipe_knobs_each_under_what_reads_it(name):
    space = SPACES[name]
    seen = sampled_configs(space, optuna.samplers.RandomSampler(seed=1), n=120)
    configs = [TrialConfig.from_params({**knobs, "dataset": space.dataset}) for _, knobs in seen]
    assert {c.lr_schedule for c in configs} == {"constant", "cosine", "step"}
    assert {c.augmentation for c in configs} == {"simple", "complex", "whitening", "crop_flip"}
    assert {c.optimizer for c in configs} == {"sgd", "adam"}
    assert any(c.label_smoothing > 0.1 for c in configs) and all(0 <= c.label_smoothing <= 0.2 for c in configs)
    for params, _ in seen:
        # Conditional: warm-up only under a decaying schedule; momentum, nesterov, decay only under SGD.
        assert ("warmup_epochs" in params) == (params["lr_schedule"] != "constant"), params
        assert ({"momentum", "nesterov", "weight_decay"} <= set(params)) == (params["optimizer"] == "sgd"), params
        assert params.get("momentum", 0.9) >= 0.8


def test_reference_cub_grid_is_the_studys_three_cub_cells():
    space = SPACES["reference_cub"]
    configs = [TrialConfig.from_params({**c, "input_size": 224}) for c in space.cells()]
    assert [(c.model, c.transfer_mode) for c in configs] == [
        ("resnet50", "extract"),
        ("resnet50", "finetune"),
        ("inception_resnet_v2", "extract"),
    ]
    assert space.dataset == "cub200" and space.max_epochs <= 5
    assert all(c.optimizer == "sgd" and c.learning_rate == 0.01 and c.batch_size == 32 for c in configs)


def test_cells_filter_keeps_the_matching_cells():
    space = SPACES["reference"]
    assert [c["bn_position"] for c in space.cells({"model": "basenet"})] == ["none", "before_relu", "after_relu"]
    assert [c["augmentation"] for c in space.cells({"model": "convnet", "bn_position": "after_relu"})] == [
        "simple",
        "complex",
        "whitening",
    ]
    assert space.cells({"model": "resnet50"}) == []


def test_batchnorm_space_asks_both_networks():
    space = SPACES["batchnorm"]
    configs = [TrialConfig.from_params(k) for _, k in sampled_configs(space, optuna.samplers.RandomSampler(seed=0))]
    assert {(c.model, c.bn_position) for c in configs} == {
        (m, bn) for m in ("basenet", "convnet") for bn in ("none", "before_relu", "after_relu")
    }
    assert len(space.cells()) == 6


def test_augmentation_space_trains_the_studys_convnet():
    space = SPACES["augmentation"]
    configs = [TrialConfig.from_params(k) for _, k in sampled_configs(space, optuna.samplers.RandomSampler(seed=0))]
    assert {c.bn_position for c in configs} == {"after_relu"}
    assert {TrialConfig.from_params(c).bn_position for c in space.cells()} == {"after_relu"}


def test_grid_cells_are_valid_and_only_some_spaces_have_one():
    with_grid = {name for name, space in SPACES.items() if space.cells()}
    assert with_grid == {"augmentation", "batchnorm", "reference", "reference_cub"}
    for name in with_grid:
        for cell in SPACES[name].cells():
            TrialConfig.from_params({"input_size": 224, **cell})
    assert [c["augmentation"] for c in SPACES["augmentation"].cells()] == ["simple", "complex", "whitening"]


def test_largest_is_the_top_of_every_distribution_a_knob_is_drawn_from():
    """What the driver checks one batch against (driver.data_checks): a range's `high` even where no
    random draw reaches it, a categorical's largest choice, a grid's cells, None where never set."""
    from search_spaces.base import SearchSpace

    def ranges(trial):
        if trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd":
            trial.suggest_int("batch_size", 16, 10_000)
        else:
            trial.suggest_int("batch_size", 8, 24)

    space = SearchSpace("t", "", ranges, dataset="digits", num_samples=1, max_epochs=1)
    assert space.largest("batch_size", n=8) == 10_000
    gridded = SearchSpace("t", "", ranges, dataset="digits", num_samples=1, max_epochs=1, grid=[{"batch_size": 20_000}])
    assert gridded.largest("batch_size", n=8) == 20_000
    assert SPACES["basenet"].largest("batch_size") == 256  # a categorical's largest choice
    assert SPACES["reference"].largest("batch_size") == 32  # fixed by `define` and in every cell
    assert SPACES["basenet"].largest("no_such_knob") is None
