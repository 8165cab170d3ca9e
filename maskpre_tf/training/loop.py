"""The steps of an epoch: one code path that drives ``model.train_step`` through ``strategy.run``.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so the
loop calls ``strategy.run`` itself for every strategy (default, mirrored, multi-worker). Each
global step (the contract is :class:`~maskpre_tf.models.step.StepOutput`):

1. ``strategy.run(model.train_step)`` on every replica's share of the global batch (replica
   context: forward, losses, gradients all-reduced by the optimizer, apply);
2. losses summed over replicas (they are already scaled by the global batch), features, labels
   and rows gathered;
3. ``model.finish_step`` in cross-replica context (memories, EMA teacher, metric trackers), so
   every replica's copy of that state receives the same update.

What happens around the steps of an epoch, and in which order, is :mod:`.epoch`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from maskpre_tf.errors import UserError
from maskpre_tf.models.step import STATE_CHECK, StepOutput
from maskpre_tf.training.contracts import TrainableModel


class NonFiniteLossError(UserError):
    """The loss (or a BatchNorm statistic) became NaN or infinite; the run stops and the last
    good checkpoint stays."""


class Trainer:
    """Runs an epoch's distributed steps, ``steps_per_loop`` of them per ``tf.function`` call.

    Args:
      model: a compiled model keeping :class:`~maskpre_tf.training.contracts.TrainableModel`.
      strategy: the distribution strategy the model was built under.
      dataset: a function of a ``tf.distribute.InputContext`` returning that input pipeline's
        dataset of per-replica batches (``make_train_dataset(stream, ctx)``: every worker
        decodes only its share), or a ``tf.data.Dataset`` of global batches that every worker
        reads whole and splits. Iterated afresh every epoch.
      steps_per_epoch: steps per epoch.
      steps_per_loop: steps per ``tf.function`` call (fewer host round trips; losses and NaN
        checks per loop).
    """

    def __init__(
        self,
        model: TrainableModel,
        strategy: tf.distribute.Strategy,
        dataset: tf.data.Dataset | Callable[[tf.distribute.InputContext], tf.data.Dataset],
        steps_per_epoch: int,
        steps_per_loop: int = 1,
    ):
        self.model = model
        self.strategy = strategy
        self.steps_per_epoch = int(steps_per_epoch)
        if callable(dataset):  # each input pipeline builds (and decodes) its own share
            self.dist_dataset = strategy.distribute_datasets_from_function(dataset)
        else:  # one stream of global batches, split by the strategy
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            self.dist_dataset = strategy.experimental_distribute_dataset(
                dataset.with_options(options)
            )
        self.steps_per_loop = max(1, int(steps_per_loop))
        self.step = tf.function(self._step)
        self._loop_fn = tf.function(self._loop)

    def _step(self, iterator) -> dict[str, tf.Tensor]:
        """One global step: replica steps, reductions, cross-replica updates; the losses."""
        batch = next(iterator)
        out = self.strategy.run(self.model.train_step, args=(batch,))
        reduce = tf.distribute.ReduceOp.SUM
        losses = {k: self.strategy.reduce(reduce, v, axis=None) for k, v in out.losses.items()}
        gather = self.strategy.gather
        self.model.finish_step(
            StepOutput(
                losses,
                gather(out.features, axis=0),
                gather(out.labels, axis=0),
                gather(out.index, axis=0),
            )
        )
        return losses

    def _loop(self, iterator, steps: int) -> dict[str, tf.Tensor]:
        """``steps`` global steps in one call (one host round trip); their mean scalars."""
        total = self._step(iterator)
        for _ in tf.range(steps - 1):
            total = {
                k: v + out
                for (k, v), out in zip(total.items(), self._step(iterator).values(), strict=True)
            }
        return {k: v / steps for k, v in total.items()}

    def train_epoch(
        self, epoch: int, observers: Sequence[keras.callbacks.Callback] = ()
    ) -> dict[str, float]:
        """The epoch's steps on a fresh iterator of the stream; the model's metrics at the end.

        ``observers`` see ``on_train_batch_begin/end`` once per loop of ``steps_per_loop``
        steps (the loop's last step and its mean losses). A NaN/inf loss or BatchNorm statistic
        (``state_check``) stops the run at the loop where it appears.

        Raises:
          NonFiniteLossError: as above.
        """
        for metric in self.model.metrics:
            metric.reset_state()
        iterator = iter(self.dist_dataset)
        done = 0
        while done < self.steps_per_epoch:
            steps = min(self.steps_per_loop, self.steps_per_epoch - done)
            for observer in observers:
                observer.on_train_batch_begin(done)
            scalars = {k: float(v) for k, v in self._loop_fn(iterator, steps).items()}
            done += steps
            bad = [k for k, v in scalars.items() if not math.isfinite(v)]
            if bad:
                what = "a BatchNorm statistic" if bad == [STATE_CHECK] else "the loss"
                raise NonFiniteLossError(
                    f"{what} became {scalars[bad[0]]} at epoch {epoch + 1}, within steps "
                    f"{done - steps + 1}-{done}; the run stopped and the last good checkpoint "
                    "is kept. Lower --lr, use --precision=float32, or check the input images"
                )
            for observer in observers:
                observer.on_train_batch_end(done - 1, scalars)
        return {m.name: float(m.result()) for m in self.model.metrics}
