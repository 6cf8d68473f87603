"""The training loss: Keras' own sparse cross-entropy at no smoothing, a smoothed one otherwise."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainables.config import TrialConfig
from trainables.losses import SmoothedSparseCrossentropy, build_loss


def test_no_smoothing_is_keras_sparse_crossentropy_so_reference_cells_compile_as_before():
    assert build_loss(TrialConfig(model="basenet")) == "sparse_categorical_crossentropy"


def test_smoothed_loss_is_the_hand_computed_cross_entropy_against_smoothed_targets():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype="float32")
    labels = np.array([0, 2])
    e, k = 0.15, 3
    targets = (1 - e) * np.eye(k)[labels] + e / k
    expected = float(np.mean(-(targets * np.log(probs)).sum(axis=1)))
    loss = build_loss(TrialConfig(model="basenet", label_smoothing=e))
    assert isinstance(loss, SmoothedSparseCrossentropy)
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    # Labels shaped (B, 1), as some pipelines hand them, give the same loss.
    assert float(loss(labels[:, None], probs)) == pytest.approx(expected, rel=1e-5)


def test_smoothed_loss_survives_save_and_load(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss=SmoothedSparseCrossentropy(0.1))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, SmoothedSparseCrossentropy) and loaded.loss.label_smoothing == pytest.approx(0.1)
