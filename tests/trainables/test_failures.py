"""Failures that retrying cannot heal become CannotHeal at their stage; the others pass through to Ray
Tune, which retries them (tests/trainables/test_trainable.py runs both in a real Ray run)."""

import numpy as np
import pytest

from trainables.config import TrialConfig
from trainables.data import ImageDataset
from trainables.failures import CannotHeal, cannot_heal, first_line
from trainables.registry import Model


def test_only_the_named_kinds_become_cannot_heal():
    with (
        pytest.raises(CannotHeal, match=r"^bad config \(ValueError\): lr must be > 0$"),
        cannot_heal("bad config", (ValueError,)),
    ):
        raise ValueError("lr must be > 0\nmore lines")
    with pytest.raises(KeyError), cannot_heal("bad config", (ValueError,)):
        raise KeyError("not named")
    # An OSError (a download, a file system) is left to Ray Tune's retry: a network may come back.
    with pytest.raises(ConnectionError), cannot_heal("built", (Exception,), unless=(OSError,)):
        raise ConnectionError("download failed")


def test_first_line_of_a_message_less_error_is_its_type():
    assert first_line(RuntimeError()) == "RuntimeError" and first_line(ValueError("  a\nb")) == "a"


def tiny(side: int) -> ImageDataset:
    x = np.zeros((20, side, side, 1), np.uint8)
    y = np.arange(20, dtype=np.int32) % 2
    return ImageDataset("digits", x, y, x, y, 2)


def test_basenet_on_8x8_images_cannot_be_built_and_says_what_keras_said():
    from trainables.trainable import _compile

    with pytest.raises(CannotHeal, match=r"the model cannot be built \(ValueError\): .*negative"):
        _compile(TrialConfig(model="basenet", dataset="digits"), tiny(8), 18)
    assert _compile(TrialConfig(model="basenet", dataset="digits"), tiny(16), 18) is not None


def test_a_builder_that_fails_on_io_is_left_to_retry(isolated_registry):
    from trainables.trainable import _compile

    def build(config, input_shape, num_classes):
        raise OSError("weights file on a share that is not mounted yet")

    isolated_registry.register_model(Model("io_net", build=build))
    with pytest.raises(OSError, match="not mounted"):
        _compile(TrialConfig(model="io_net", dataset="digits"), tiny(16), 18)


@pytest.mark.parametrize(
    ("params", "labels", "message"),
    [
        ({"kernel_size": 0}, None, r"^bad config \(ValueError\): kernel_size must be >= 1"),
        ({}, [0] * 19 + [1], r"^the validation split cannot be made \(ValueError\): The least populated class"),
    ],
    ids=["bad_config", "split"],
)
def test_a_bad_config_or_a_split_that_cannot_be_made_cannot_heal(params, labels, message, monkeypatch):
    from ray import tune

    from trainables.trainable import _train

    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)  # a first attempt, outside a Tune session
    data = tiny(16)
    if labels is not None:
        data = ImageDataset("digits", data.x_train, np.array(labels, np.int32), data.x_test, data.y_test, 2)
    with pytest.raises(CannotHeal, match=message):
        _train({"model": "basenet", "dataset": "digits", **params}, data, gpus=0, checkpoint_every=1)
