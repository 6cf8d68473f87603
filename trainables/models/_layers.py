"""Layers the built-in CNNs share (imports Keras: only builders import this module)."""

from __future__ import annotations

from keras import layers


def conv_block(filters: int, kernel_size: int, bn_position: str | None, block: int) -> list[layers.Layer]:
    """A 'valid' conv, its ReLU, and a BatchNorm before or after that ReLU (or none)."""
    # Bias is redundant right before a BatchNorm, which has its own shift.
    conv = layers.Conv2D(
        filters, kernel_size, padding="valid", use_bias=bn_position != "before_relu", name=f"conv{block}"
    )
    relu = layers.ReLU(name=f"relu{block}")
    if bn_position == "before_relu":
        return [conv, layers.BatchNormalization(name=f"bn{block}"), relu]
    if bn_position == "after_relu":
        return [conv, relu, layers.BatchNormalization(name=f"bn{block}")]
    return [conv, relu]
