"""MaskPre heads: the mask-prediction head and the cluster-prototype memory update.

The mask-prediction head maps the student's masked region features to a prediction of what the
moving-average teacher sees at every position (the loss only reads the dropped ones). The
prototype update keeps one L2-normalised centroid per pseudo-label cluster, refreshed by each
batch with momentum (the cluster memory of Cluster Contrast, Dai et al., 2021).
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


def update_prototypes(
    prototypes: tf.Tensor, features: tf.Tensor, labels: tf.Tensor, momentum: float = 0.1
) -> tf.Tensor:
    """Momentum update of cluster prototypes with one batch (pure, vectorised, graph-safe).

    For every cluster k present in the batch: f_k = mean of the L2-normalised features labelled
    k; proto_k <- normalize(momentum * proto_k + (1 - momentum) * f_k). Momentum 0.1 keeps 10%
    of the old prototype (the convention of Cluster Contrast's memory). Clusters absent from the
    batch are returned unchanged; labels < 0 (outliers) or >= M are ignored.

    Args:
      prototypes: float [M, D], rows L2-normalised.
      features: float [B, D] (any scale; normalised here).
      labels: int [B] cluster ids.
      momentum: weight of the old prototype, in [0, 1].

    Returns:
      float32 [M, D].
    """
    prototypes = tf.cast(prototypes, tf.float32)
    features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
    labels = tf.cast(labels, tf.int32)
    num_slots = tf.shape(prototypes)[0]
    valid = tf.logical_and(labels >= 0, labels < num_slots)
    segment = tf.where(valid, labels, num_slots)  # invalid labels go to a spare segment
    sums = tf.math.unsorted_segment_sum(features, segment, num_slots + 1)[:-1]
    counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, tf.float32), segment, num_slots + 1)
    counts = counts[:-1, None]
    means = sums / tf.maximum(counts, 1.0)
    mixed = momentum * prototypes + (1.0 - momentum) * means
    return tf.where(counts > 0.0, tf.math.l2_normalize(mixed, axis=-1), prototypes)


__all__ = ["MaskPredictionHead", "default_hidden_channels", "update_prototypes"]
