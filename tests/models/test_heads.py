"""Tests for maskpre_tf.models.heads: the mask-prediction head (MaskPredictionHead)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.models.heads import MaskPredictionHead, default_hidden_channels  # noqa: E402

H, W = 16, 8


def test_mask_prediction_head_shapes_and_sync_bn():
    head = MaskPredictionHead(64)
    out = head(tf.ones([2, H, W, 64]), training=True)
    assert out.shape == (2, H, W, 64)
    assert head.hidden == default_hidden_channels(64) == 8
    assert default_hidden_channels(2048) == 256 and default_hidden_channels(1280) == 160
    assert default_hidden_channels(2) == 1
    assert head.reduce_norm.synchronized and head.context_norm.synchronized
    kernel_shapes = sorted(tuple(w.shape) for w in head.trainable_weights)
    for shape in ((1, 1, 64, 8), (3, 3, 8, 8), (1, 1, 8, 64)):  # reduce, context, expand
        assert shape in kernel_shapes
    clone = MaskPredictionHead.from_config(head.get_config())
    assert (clone.channels, clone.hidden) == (64, 8)


def test_mask_prediction_head_is_trainable_towards_a_target():
    head = MaskPredictionHead(8, hidden=8)
    x = tf.random.stateless_normal([4, 6, 4, 8], seed=[15, 16])
    target = tf.random.stateless_normal([4, 6, 4, 8], seed=[17, 18])
    optimizer = keras.optimizers.Adam(1e-2)
    errors = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(head(x, training=True) - target))
        grads = tape.gradient(loss, head.trainable_weights)
        optimizer.apply_gradients(zip(grads, head.trainable_weights, strict=True))
        errors.append(float(loss))
    assert errors[-1] < 0.8 * errors[0]


def test_predicting_chosen_cells_equals_the_full_prediction_there():
    head = MaskPredictionHead(12, hidden=6)
    x = tf.random.stateless_normal([2, 4, 3, 12], seed=[3, 4])
    full = head(x, training=False).numpy()
    cells = tf.constant([[0, 0, 0], [1, 3, 2], [1, 1, 0]], tf.int64)
    got = head.predict_cells(head.context_features(head.reduce(x), training=False), cells)
    want = np.stack([full[0, 0, 0], full[1, 3, 2], full[1, 1, 0]])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    assert head.predict_cells(head.context_features(head.reduce(x)), cells[:0]).shape == (0, 12)
