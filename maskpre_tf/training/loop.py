"""The training loop: one code path that drives ``model.train_step`` through ``strategy.run``.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so the
loop calls ``strategy.run`` itself for every strategy (default, mirrored, multi-worker) and
drives ordinary Keras callbacks (``keras.callbacks.CallbackList``) at the usual hooks. Each step:

1. ``strategy.run(model.train_step)`` on every replica's share of the global batch (replica
   context: forward, losses, gradients all-reduced by the optimizer, apply);
2. losses summed over replicas (they are already scaled by the global batch), features and
   labels gathered;
3. ``model.finish_step`` in cross-replica context (prototypes, EMA teacher, metric trackers), so
   every replica's copy of that state receives the same update.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import keras
import tensorflow as tf

from maskpre_tf.errors import UserError

BATCH_OUTPUTS = ("features", "label")  # per-example step outputs; the rest are scalar losses


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint stays."""


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for ``--strategy``.

    - ``default``: no distribution (one device).
    - ``mirrored``: every local GPU (or the CPU when there is none), synchronous all-reduce.
    - ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"--strategy={name}: expected default, mirrored or multi_worker")


class Trainer:
    """Runs epochs of ``steps_per_epoch`` distributed steps with Keras callbacks.

    Args:
      model: a compiled model with ``train_step`` (replica context) returning per-replica scaled
        losses plus "features" and "label", ``finish_step(features, labels, scalars)``
        (cross-replica context) and ``metrics``.
      strategy: the distribution strategy the model was built under.
      dataset: a ``tf.data.Dataset`` of global batches, re-iterated once per epoch.
      steps_per_epoch: steps per epoch.
      callbacks: Keras callbacks; a callback may set ``model.skip_epoch = True`` in
        ``on_epoch_begin`` to skip that epoch's steps (e.g. clustering found no cluster).
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy,
                 dataset: tf.data.Dataset, steps_per_epoch: int,
                 callbacks: Iterable[keras.callbacks.Callback]):
        self.model = model
        self.strategy = strategy
        self.steps_per_epoch = int(steps_per_epoch)
        self.callbacks = keras.callbacks.CallbackList(list(callbacks), model=model,
                                                      epochs=None, steps=steps_per_epoch)
        self.dist_dataset = strategy.experimental_distribute_dataset(dataset)
        self._step_fn = tf.function(self._step)

    def _step(self, iterator) -> dict[str, tf.Tensor]:
        """One global step: replica steps, reductions, cross-replica updates."""
        batch = next(iterator)
        out = self.strategy.run(self.model.train_step, args=(batch,))
        reduce = tf.distribute.ReduceOp.SUM
        scalars = {k: self.strategy.reduce(reduce, v, axis=None)
                   for k, v in out.items() if k not in BATCH_OUTPUTS}
        features = self.strategy.gather(out["features"], axis=0)
        labels = self.strategy.gather(out["label"], axis=0)
        self.model.finish_step(features, labels, scalars)
        return scalars

    def fit(self, initial_epoch: int, epochs: int) -> dict[str, float]:
        """Train epochs ``initial_epoch .. epochs - 1``; returns the last epoch's logs."""
        model = self.model
        model.stop_training = False
        logs: dict[str, float] = {}
        self.callbacks.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            model.skip_epoch = False
            self.callbacks.on_epoch_begin(epoch)
            if model.skip_epoch:
                logs = {"skipped": 1.0}
                self.callbacks.on_epoch_end(epoch, logs)
                continue
            for metric in model.metrics:
                metric.reset_state()
            iterator = iter(self.dist_dataset)
            for step in range(self.steps_per_epoch):
                self.callbacks.on_train_batch_begin(step)
                scalars = self._step_fn(iterator)
                step_logs = {k: float(v) for k, v in scalars.items()}
                if not math.isfinite(step_logs["loss"]):
                    raise NonFiniteLossError(
                        f"the loss became {step_logs['loss']} at epoch {epoch + 1}, step "
                        f"{step + 1}; the run stopped and the last good checkpoint is kept. "
                        "Lower --lr, use --precision=float32, or check the input images")
                self.callbacks.on_train_batch_end(step, step_logs)
            logs = {m.name: float(m.result()) for m in model.metrics}
            self.callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        self.callbacks.on_train_end(logs)
        return logs
