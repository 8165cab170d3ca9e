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
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="maskpre_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with a fused training pass (4-D, channels last).

    Falls back to Keras's implementation for synchronised statistics, renormalisation, masks,
    other ranks or axes, a non-TensorFlow backend, and symbolic ``training`` flags.
    """

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
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        biased = variance * (count - 1.0) / count
        momentum = self.momentum
        moving_mean, moving_variance = self.moving_mean, self.moving_variance
        moving_mean.assign(
            moving_mean * momentum + tf.cast(mean, moving_mean.dtype) * (1.0 - momentum)
        )
        moving_variance.assign(
            moving_variance * momentum + tf.cast(biased, moving_variance.dtype) * (1.0 - momentum)
        )
        return tf.cast(outputs, self.compute_dtype)


def batch_normalization(synchronized: bool = False, **config) -> keras.layers.Layer:
    """A BatchNormalization layer: Keras's when synchronised, else the fused one."""
    cls = keras.layers.BatchNormalization if synchronized else FusedBatchNormalization
    return cls(synchronized=synchronized, **config)
