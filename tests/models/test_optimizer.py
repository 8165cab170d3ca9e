"""The L2 weight decay on the gradients is the same for float32, bfloat16 and float16."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.config import TrainConfig  # noqa: E402
from maskpre_tf.models.optimizer import apply_gradients_with_l2, make_optimizer  # noqa: E402

W0 = np.array([0.5, -2.0, 3.0], np.float32)
X = np.array([1.0, 0.25, -0.5], np.float32)
LR, DECAY = 0.1, 0.5


def _one_step(optimizer, loss_dtype) -> np.ndarray:
    """w after one step on loss = sum(w * x) computed in ``loss_dtype``, with L2 decay."""
    w = keras.Variable(W0.copy())
    optimizer.build([w])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(w, loss_dtype) * tf.cast(X, loss_dtype))
        scaled = optimizer.scale_loss(tf.cast(loss, tf.float32))
    grads = tape.gradient(scaled, [w])
    apply_gradients_with_l2(optimizer, grads, [w], DECAY)
    return w.numpy()


@pytest.mark.parametrize(
    "loss_dtype, loss_scaled", [(tf.float32, False), (tf.bfloat16, False), (tf.float16, True)]
)
def test_decay_survives_loss_scaling(loss_dtype, loss_scaled):
    sgd = keras.optimizers.SGD(LR)
    optimizer = keras.optimizers.LossScaleOptimizer(sgd) if loss_scaled else sgd
    after = _one_step(optimizer, loss_dtype)
    expected = W0 - LR * (X + DECAY * W0)  # plain SGD on the gradient x + decay * w
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)
    if loss_scaled:
        assert float(optimizer.scale_loss(tf.constant(1.0))) == 2.0**15  # scaling was on


def test_float16_config_gets_a_loss_scale_optimizer_and_the_same_adam_step():
    steps = {}
    for precision in ("float32", "mixed_float16"):
        cfg = TrainConfig().replace(precision=precision, lr=LR, iters=10, epochs=2, lr_step=1)
        optimizer = make_optimizer(cfg.optim)
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (
            precision == "mixed_float16"
        )
        steps[precision] = _one_step(optimizer, tf.float32)
    np.testing.assert_allclose(steps["mixed_float16"], steps["float32"], rtol=1e-5)
