"""The MLP baseline: registered from its own file, reads only `dense_units`, and learns."""

import keras
import numpy as np

from trainables import registry
from trainables.architectures import build_model, build_optimizer, input_shape
from trainables.config import TrialConfig


def test_mlp_is_registered_and_reads_only_dense_units():
    config = TrialConfig.from_params({"model": "mlp", "dense_units": 64})
    row = config.to_row()
    assert registry.model("mlp").knobs == ("dense_units",)
    assert row["dense_units"] == 64 and row["depth"] is None and row["bn_position"] is None


def test_mlp_has_one_hidden_layer_of_dense_units_and_learns():
    config = TrialConfig.from_params({"model": "mlp", "dense_units": 32, "optimizer": "adam", "learning_rate": 0.01})
    keras.utils.set_random_seed(0)  # seeded initial weights: the run is the same every time
    model = build_model(config, input_shape(config, (8, 8, 1)), 3)
    assert model.count_params() == (64 * 32 + 32) + (32 * 3 + 3)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = (rng.normal(size=(300, 8, 8, 1)) + y[:, None, None, None]).astype("float32")  # separable classes
    model.compile(optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
