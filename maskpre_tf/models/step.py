"""The contract between a model, the training loop and the callbacks, for one global step.

A training batch is a dict (the tf.data pipeline's element, :func:`~maskpre_tf.data.pipeline.
make_train_dataset`): "image" float32 [b, H, W, 3] RGB pixels in 0–255, "label" int64 [b]
pseudo (or source) labels, "index" int64 [b] training-set rows, "key" int64 [b] a per-draw key.

A model's ``train_step(batch)`` runs in replica context and returns a :class:`StepOutput` of
that replica's share; the loop sums the losses over replicas, gathers the per-sample fields into
the global batch and hands the result to ``model.finish_step(output)`` in cross-replica context,
where the state every replica holds a copy of (memories, EMA teacher) is updated identically.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class StepOutput(NamedTuple):
    """One step's results.

    losses: name → scalar float32, already averaged over the global batch (``"loss"`` is the
      total the gradients came from).
    features: float32 [b, D] the batch's (detached) embeddings for the memory update.
    labels: int64 [b] their labels. index: int64 [b] their training-set rows.
    """

    losses: dict[str, tf.Tensor]
    features: tf.Tensor
    labels: tf.Tensor
    index: tf.Tensor


#: Name of the step scalar that is finite exactly when every BatchNorm statistic is.
STATE_CHECK = "state_check"


def state_check(model) -> tf.Tensor:
    """Sum of ``model``'s non-trainable float variables (its BatchNorm moving statistics).

    A float32 scalar that is finite unless one of them is NaN or infinite. The loop checks it
    with the losses: a fused kernel (BatchNorm followed by ReLU) can clip a NaN activation back
    to a number, so a poisoned statistic need not show in the loss of the step that made it.
    """
    values = [
        tf.reduce_sum(tf.cast(v, tf.float32))
        for v in model.non_trainable_variables
        if tf.as_dtype(v.dtype).is_floating
    ]
    total = tf.add_n(values) if values else tf.zeros([])
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    return total / replicas  # the loop sums step scalars over replicas: this sums to the mean
