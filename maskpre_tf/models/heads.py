"""The mask-prediction head of MaskPre (the clustering head's memory: :mod:`.memory`).

The mask-prediction head maps the student's masked region features to a prediction of what the
moving-average teacher sees at every position (the loss only reads the dropped ones).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from maskpre_tf.models.layers import BN_MOMENTUM


def default_hidden_channels(channels: int) -> int:
    """Bottleneck width of the mask-prediction head: channels // 8, within [1, 256]."""
    return max(1, min(channels // 8, 256))


@keras.saving.register_keras_serializable(package="maskpre_tf")
class MaskPredictionHead(keras.layers.Layer):
    """Bottleneck conv head [B, H, W, C] -> [B, H, W, C] predicting teacher features per cell.

    1x1 conv to ``hidden`` channels -> BN -> ReLU -> 3x3 conv (``hidden``) -> BN -> ReLU -> 1x1
    conv back to ``channels``. The 3x3 lets a dropped cell borrow context from its neighbours;
    running it at the bottleneck width keeps the head cheap (C = 1280, hidden 160: 0.64 M
    multiply-adds per cell, against 4.1 M for a 3x3 on the full width into C // 4). In training
    the two views share the first 1x1 (:meth:`context_features`) and the last 1x1 runs only at
    the dropped cells (:meth:`predict_cells`). BatchNorm is synchronised so its statistics match
    across replicas (identical on one replica).

    Args:
      channels: C, the feature channels in and out.
      hidden: bottleneck width; None means ``default_hidden_channels(channels)``.
    """

    def __init__(self, channels: int, hidden: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if int(channels) < 1:
            raise ValueError(f"MaskPredictionHead: channels must be >= 1, got {channels}.")
        self.channels = int(channels)
        self.hidden = int(hidden) if hidden is not None else default_hidden_channels(channels)
        self.reduce = keras.layers.Conv2D(self.hidden, 1, use_bias=False, name="reduce")
        self.reduce_norm = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, synchronized=True, name="reduce_norm"
        )
        self.context = keras.layers.Conv2D(
            self.hidden, 3, padding="same", use_bias=False, name="context"
        )
        self.context_norm = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, synchronized=True, name="context_norm"
        )
        self.expand = keras.layers.Conv2D(self.channels, 1, name="expand")

    def build(self, input_shape):
        hidden_shape = (*tuple(input_shape[:-1]), self.hidden)
        self.reduce.build(input_shape)
        self.reduce_norm.build(hidden_shape)
        self.context.build(hidden_shape)
        self.context_norm.build(hidden_shape)
        self.expand.build(hidden_shape)

    def call(self, x, training=None):
        """[B, H, W, C] → the prediction at every cell [B, H, W, C]."""
        return self.expand(self.context_features(self.reduce(x), training=training))

    def context_features(self, reduced, training=None):
        """The bottleneck after its 3x3: ``reduce(x)`` [B, H, W, hidden] → [B, H, W, hidden].

        ``reduce`` is a 1x1 convolution without bias, so for a per-cell mask ``m`` (DropBlock's
        keep map times its rescaling) ``reduce(x * m) == reduce(x) * m``: the two views of one
        map share one ``reduce``.
        """
        h = tf.nn.relu(self.reduce_norm(reduced, training=training))
        return tf.nn.relu(self.context_norm(self.context(h), training=training))

    def predict_cells(self, features, cells):
        """The prediction at chosen cells only: ``expand`` of [B, H, W, hidden] at ``cells``.

        Args:
          features: [B, H, W, hidden] from :meth:`context_features`.
          cells: int [M, 3] (sample, row, column) of the cells to predict.
        Returns:
          [M, C], equal to ``call``'s output at those cells; the 1x1 ``expand`` runs on M
          cells instead of B * H * W (the mask loss reads only the dropped ones).
        """
        picked = tf.gather_nd(features, cells)
        kernel = tf.cast(self.expand.kernel[0, 0], picked.dtype)  # [hidden, C]
        return tf.matmul(picked, kernel) + tf.cast(self.expand.bias, picked.dtype)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape[:-1]), self.channels)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "hidden": self.hidden})
        return config


__all__ = ["MaskPredictionHead", "default_hidden_channels"]
