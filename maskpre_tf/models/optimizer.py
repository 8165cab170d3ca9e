"""The optimizer: Adam with the recipe's step schedule, and L2 weight decay on the gradients.

The reference re-ID recipes use ``torch.optim.Adam(weight_decay=...)``, which adds
``weight_decay * w`` to every gradient before the Adam update (coupled L2, not AdamW).
:func:`apply_gradients_with_l2` does the same from replica context, for every precision: the
gradients of a loss-scaled loss (float16) are still scaled when they reach it, so the decay term
is scaled by the same factor and the optimizer's unscaling leaves exactly ``weight_decay * w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from maskpre_tf.config import OptimConfig


def make_optimizer(optim: OptimConfig, epochs: int | None = None) -> keras.optimizers.Optimizer:
    """Adam with the step schedule; loss scaling for float16.

    The learning rate drops x0.1 after ``optim.lr_step`` epochs (for a phase of another length,
    ``epochs``, after the same fraction of it).
    """
    step_epoch = optim.lr_step if epochs is None else round(optim.lr_step * epochs / optim.epochs)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [step_epoch * optim.iters], [optim.lr, optim.lr * 0.1]
    )
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    if optim.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def apply_gradients_with_l2(
    optimizer: keras.optimizers.Optimizer,
    grads: Sequence[tf.Tensor | None],
    variables: Sequence,
    weight_decay: float,
) -> None:
    """Add ``weight_decay * w`` to each gradient of a scaled loss and apply them (replica context).

    Args:
      grads: gradients of ``optimizer.scale_loss(loss)`` (None for variables a switched-off
        head does not reach: those are left alone, decay included).
      variables: the trainable variables, in the order of ``grads``.
    Replica gradients are summed by the optimizer, so each replica adds its share of the decay.
    """
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
    decay = weight_decay * scale / replicas
    optimizer.apply_gradients(
        (g + tf.cast(decay, g.dtype) * tf.cast(v, g.dtype), v)
        for g, v in zip(grads, variables, strict=True)
        if g is not None
    )
