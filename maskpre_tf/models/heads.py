"""The mask-prediction head of MaskPre (the clustering head's memory: :mod:`.memory`).

The mask-prediction head maps the student's masked region features to a prediction of what the
moving-average teacher sees at every position (the loss only reads the dropped ones).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from maskpre_tf.models.layers import BN_MOMENTUM


def default_hidden_channels(channels: int) -> int:
    """Hidden width of the mask-prediction head: channels // 4, at most 512, at least 1."""
    return max(1, min(channels // 4, 512))


@keras.saving.register_keras_serializable(package="maskpre_tf")
class MaskPredictionHead(keras.layers.Layer):
    """Small conv head [B, H, W, C] -> [B, H, W, C] predicting teacher features per position.

    3x3 conv (``hidden`` channels, no bias) -> synchronised BatchNorm -> ReLU -> 1x1 conv back
    to ``channels``. The 3x3 receptive field lets a dropped cell borrow context from its kept
    neighbours at a block's edge; the 1x1 projection is cheap. BatchNorm is synchronised so its
    statistics match across replicas under a multi-replica strategy (identical on one replica).

    Args:
      channels: C, the feature channels in and out.
      hidden: hidden width; None means ``default_hidden_channels(channels)`` (C // 4, <= 512).
    """

    def __init__(self, channels: int, hidden: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(channels) < 1:
            raise ValueError(f"MaskPredictionHead: channels must be >= 1, got {channels}.")
        self.channels = int(channels)
        self.hidden = int(hidden) if hidden is not None else default_hidden_channels(channels)
        self.conv_in = keras.layers.Conv2D(
            self.hidden, 3, padding="same", use_bias=False, name="conv_in"
        )
        self.norm = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, synchronized=True, name="norm"
        )
        self.conv_out = keras.layers.Conv2D(self.channels, 1, name="conv_out")

    def build(self, input_shape):
        hidden_shape = (*tuple(input_shape[:-1]), self.hidden)
        self.conv_in.build(input_shape)
        self.norm.build(hidden_shape)
        self.conv_out.build(hidden_shape)

    def call(self, x, training=None):
        h = self.conv_in(x)
        h = self.norm(h, training=training)
        h = tf.nn.relu(h)
        return self.conv_out(h)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape[:-1]), self.channels)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "hidden": self.hidden})
        return config


__all__ = ["MaskPredictionHead", "default_hidden_channels"]
