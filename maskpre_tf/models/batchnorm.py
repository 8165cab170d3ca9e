"""BatchNormalization whose training pass is one fused kernel on TensorFlow.

Keras 3's ``BatchNormalization`` computes training-mode statistics and the normalisation as
separate element-wise ops (``tf.nn.moments`` then ``tf.nn.batch_normalization``), and their
gradients as another chain of them. TensorFlow's ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on
GPU) does both directions in one kernel each. :class:`FusedBatchNormalization` is the Keras layer
with that kernel in training mode; everything else — variables, inference, synchronised
statistics across replicas, masks, configuration — is Keras's own, so weights, checkpoints and
the BatchNorm folding of :mod:`maskpre_tf.models.folding` see an ordinary BatchNormalization.

The moving statistics follow Keras's rule exactly: ``moving = moving * momentum + batch * (1 -
momentum)`` with the biased batch variance (the fused kernel returns the unbiased one, which is
rescaled by ``(n - 1) / n``, n the number of values per channel).

With ``group_size`` N (ghost BatchNorm, Hoffer et al., NeurIPS 2017) the training-mode
statistics are those of groups of N images of the batch, as on replicas of N images each: each
group of the batch [B, H, W, C] (a contiguous slice of N images) goes through the same fused
kernel, and the moving statistics take the mean over the groups of their means and biased
variances.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="maskpre_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training pass (4-D, channels last).

    Falls back to Keras's implementation for synchronised statistics, renormalisation, masks,
    other ranks or axes, a non-TensorFlow backend, and symbolic ``training`` flags.

    Args:
      group_size: training-mode statistics over groups of this many images (0: the whole
        batch); the batch must be a multiple of it.
    """

    def __init__(self, group_size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.group_size = int(group_size)

    def get_config(self) -> dict:
        return {**super().get_config(), "group_size": self.group_size}

    def _fused(self, inputs, training, mask) -> bool:
        return (
            training is True
            and self.trainable
            and not self.synchronized
            and not self.renorm
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.backend() == "tensorflow"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if self.group_size:
            outputs, mean, biased = self._grouped(inputs, scale, offset)
        else:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
            biased = variance * (count - 1.0) / count
        self._update_moving(mean, biased)
        return tf.cast(outputs, self.compute_dtype)

    def _grouped(self, inputs, scale, offset):
        """Ghost BatchNorm of [B, H, W, C] in groups of ``group_size`` images: (outputs, the
        groups' mean of means [C], their mean of biased variances [C]).

        With a static batch each group is a contiguous slice through its own fused kernel (the
        split and the concatenation are plain copies); a batch known only at run time takes the
        element-wise moments of the groups instead (Keras's unfused arithmetic, ~1.5x slower).
        """
        n = self.group_size
        batch = inputs.shape[0]
        if batch is None:
            return self._grouped_moments(inputs, scale, offset)
        if batch % n:
            raise ValueError(f"--bn_group_size={n} does not divide the replica's batch of {batch}")
        outputs, means, variances = [], [], []
        for group in tf.split(inputs, batch // n):
            out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                group, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            outputs.append(out)
            means.append(mean)
            variances.append(variance)
        count = tf.cast(n * tf.shape(inputs)[1] * tf.shape(inputs)[2], tf.float32)
        biased = tf.add_n(variances) / len(variances) * (count - 1.0) / count
        return tf.concat(outputs, 0), tf.add_n(means) / len(means), biased

    def _grouped_moments(self, inputs, scale, offset):
        """:meth:`_grouped` for a batch whose size is known only at run time."""
        n = self.group_size
        shape = tf.shape(inputs)
        divides = tf.debugging.assert_equal(
            shape[0] % n, 0, message=f"--bn_group_size={n} does not divide the replica's batch"
        )
        with tf.control_dependencies([divides]):
            x = tf.reshape(inputs, [-1, n * shape[1] * shape[2], inputs.shape[-1]])
        x = tf.cast(x, tf.float32)  # scale and offset are float32 (the caller casts back)
        mean, biased = tf.nn.moments(x, axes=[1], keepdims=True)
        out = (x - mean) * tf.math.rsqrt(biased + self.epsilon) * scale + offset
        per_channel = lambda v: tf.reduce_mean(v, axis=[0, 1])  # noqa: E731
        return tf.reshape(out, shape), per_channel(mean), per_channel(biased)

    def _update_moving(self, mean, biased):
        """Keras's rule: moving ← moving · momentum + batch · (1 − momentum)."""
        momentum = self.momentum
        moving_mean, moving_variance = self.moving_mean, self.moving_variance
        moving_mean.assign(
            moving_mean * momentum + tf.cast(mean, moving_mean.dtype) * (1.0 - momentum)
        )
        moving_variance.assign(
            moving_variance * momentum + tf.cast(biased, moving_variance.dtype) * (1.0 - momentum)
        )


def batch_normalization(
    synchronized: bool = False, group_size: int = 0, **config
) -> keras.layers.Layer:
    """A BatchNormalization layer: Keras's when synchronised across replicas, else the fused one
    (over groups of ``group_size`` images when given; grouping replaces synchronising)."""
    if group_size:
        return FusedBatchNormalization(group_size=group_size, synchronized=False, **config)
    if synchronized:
        return keras.layers.BatchNormalization(synchronized=True, **config)
    return FusedBatchNormalization(synchronized=False, **config)
