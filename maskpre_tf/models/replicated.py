"""Work on every replica's copy: state updates from identical inputs, and split inference.

After each step the memories and the EMA teacher change in cross-replica context. Assigning a
new value to a mirrored variable there would compute it once and copy it to every device; here
each device's copy applies ``fn`` to its own operands instead (mirrored operands are read from
the same device), so no state is broadcast and the copies stay identical because their inputs
are. On one device (or with no strategy) ``fn`` simply runs.

Inference for clustering and evaluation (:func:`spread_over_replicas`) splits each batch over
the worker's own devices, so a 4-GPU worker extracts features on all 4.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


def _tf_variable(value):
    """The tf.Variable inside a Keras variable; anything else unchanged."""
    return value.value if isinstance(value, keras.Variable) else value


def local_copy(variable):
    """This replica's own copy of a (possibly mirrored, possibly Keras) variable.

    A mirrored variable has no ``sparse_read``; its copies do. In replica context the copy is the
    replica's (its index among this worker's copies: the global replica id modulo the local
    count, the order of ``strategy.run``); in cross-replica context the first copy (the copies
    are identical). Any other variable is returned unwrapped.
    """
    variable = _tf_variable(variable)
    copies = getattr(variable, "values", None)
    if not copies:
        return variable
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else tf.get_static_value(context.replica_id_in_sync_group)
    return copies[int(replica or 0) % len(copies)]


def update_each_copy(variable, fn: Callable, *args) -> None:
    """``fn(copy, *args)`` on every replica's copy of ``variable`` (a tf or Keras variable).

    Mirrored variables among ``args`` are passed as the same device's copy.
    """
    variable = _tf_variable(variable)
    args = tuple(_tf_variable(a) for a in args)
    strategy = getattr(variable, "distribute_strategy", None)
    if strategy is None:
        fn(variable, *args)
    else:
        strategy.extended.update(variable, fn, args=args)


def spread_over_replicas(
    strategy: tf.distribute.Strategy, fn: Callable[[tf.Tensor], tf.Tensor]
) -> Callable[[tf.Tensor], tf.Tensor]:
    """A ``tf.function`` computing ``fn`` [b, ...] → [b, D] with the batch split over devices.

    Each of this worker's replicas runs ``fn`` on its consecutive slice of the batch (the last
    padded with zeros); the results are concatenated in order and the padding dropped. No
    cross-replica communication: every worker may call it on its own batches. With one device
    per worker, ``fn`` runs as it is.
    """
    try:
        local = len(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: one device
        local = 1
    if local <= 1:
        return tf.function(fn, reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def spread(x: tf.Tensor) -> tf.Tensor:
        count = tf.shape(x)[0]
        size = (count + local - 1) // local
        padding = [[0, size * local - count]] + [[0, 0]] * (len(x.shape) - 1)
        parts = tf.reshape(tf.pad(x, padding), tf.concat([[local, size], tf.shape(x)[1:]], 0))
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: parts[ctx.replica_id_in_sync_group % local]
        )
        out = strategy.run(fn, args=(values,))
        return tf.concat(strategy.experimental_local_results(out), 0)[:count]

    return spread
