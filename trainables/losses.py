"""The training loss: sparse categorical cross-entropy, with label smoothing when the config asks.

Keras 3's SparseCategoricalCrossentropy has no `label_smoothing` (the dense one has), so a smoothed
trial one-hot encodes its integer labels inside the loss: the pipelines keep feeding int32 labels
and the `accuracy` metric stays the sparse one. With smoothing e over K classes the target is
(1 - e) on the true class plus e / K on every class (Szegedy et al., as keras' dense loss does it).
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="keras_hpo")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of softmax outputs against smoothed one-hot targets of integer labels."""

    def __init__(self, label_smoothing: float, name: str = "smoothed_sparse_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        target = keras.ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def build_loss(config: Any) -> str | keras.losses.Loss:
    """The loss of `config` (a TrialConfig): Keras' own sparse cross-entropy at no smoothing, so a
    reference cell compiles exactly as before."""
    if not config.label_smoothing:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCrossentropy(config.label_smoothing)
