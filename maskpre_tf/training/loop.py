"""The training loop: one code path that drives ``model.train_step`` through ``strategy.run``.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so the
loop calls ``strategy.run`` itself for every strategy (default, mirrored, multi-worker) and
drives ordinary Keras callbacks (``keras.callbacks.CallbackList``) at the usual hooks. Each step
(the contract is :class:`~maskpre_tf.training.step.StepOutput`):

1. ``strategy.run(model.train_step)`` on every replica's share of the global batch (replica
   context: forward, losses, gradients all-reduced by the optimizer, apply);
2. losses summed over replicas (they are already scaled by the global batch), features, labels
   and rows gathered;
3. ``model.finish_step`` in cross-replica context (memories, EMA teacher, metric trackers), so
   every replica's copy of that state receives the same update.

Hook order of a MaskPre run (the callback list of :mod:`maskpre_tf.training.train_lib`; Keras
calls the callbacks in list order at each hook)::

    on_epoch_begin   clustering (features → pseudo labels → memories, sampler), progress clock
    (steps)          on_train_batch_begin/end once per loop of --steps_per_loop steps
    on_epoch_end     evaluation (and best-on-validation weights), epoch counter (finished
                     epochs + 1), progress line and per-epoch summary, TensorBoard, checkpoint

The checkpoint comes last: it commits the epoch. A kill before it re-runs the epoch from the
previous checkpoint (deterministically: the stream is seeded by the epoch) and rewrites that
epoch's summary entry; a kill after it finds every file of the epoch already written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf.errors import UserError
from maskpre_tf.training.step import STATE_CHECK, StepOutput


class NonFiniteLossError(UserError):
    """The loss (or a BatchNorm statistic) became NaN or infinite; the run stops and the last
    good checkpoint stays."""


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
        problem = tf_config_problem(os.environ.get("TF_CONFIG", ""))
        if problem:
            raise UserError(
                f"TF_CONFIG (read by --strategy=multi_worker): {problem}; set it on every worker "
                f"to e.g. {TF_CONFIG_EXAMPLE} (each its own task index), or train on one "
                "machine with --strategy=mirrored"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"--strategy={name}: expected default, mirrored or multi_worker")


TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
    '"index": 0}}'
)


def tf_config_problem(text: str) -> str | None:
    """What is wrong with a ``TF_CONFIG`` value for ``--strategy=multi_worker``, or None.

    An unset (empty) ``TF_CONFIG`` is fine: the strategy then runs this process as the only
    worker. Otherwise it must be a JSON object with a ``cluster`` (task type → non-empty list of
    "host:port") and this process's ``task`` (a ``type`` of the cluster and an ``index`` into its
    list), checked here so a typo is one clear line rather than an error deep inside TensorFlow.
    """
    if not text.strip():
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err})"
    if not isinstance(spec, dict):
        return f"expected a JSON object, got {type(spec).__name__}"
    cluster, task = spec.get("cluster"), spec.get("task")
    addresses_ok = isinstance(cluster, dict) and cluster
    addresses_ok = addresses_ok and all(
        isinstance(hosts, list) and hosts and all(isinstance(h, str) and h for h in hosts)
        for hosts in cluster.values()
    )
    if not addresses_ok:
        return (
            'no usable "cluster": expected {"worker": ["host:port", ...]} (a "chief" too, if any)'
        )
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        return (
            'no usable "task": expected {"type": "worker", "index": N}, this process in "cluster"'
        )
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        return (
            f'"task" type {json.dumps(kind)} is not a task type of "cluster" ({", ".join(cluster)})'
        )
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        last = len(cluster[kind]) - 1
        given = json.dumps(task["index"])
        return f'"task" index {given} is not 0..{last} (the {kind} list of "cluster")'
    return None


@dataclass(frozen=True)
class WorkerInfo:
    """Where this process stands in the cluster: index in 0..count-1; index 0 is the chief."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_info(strategy: tf.distribute.Strategy) -> WorkerInfo:
    """This worker's index among all tasks of ``TF_CONFIG`` (chief first, then workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return WorkerInfo()
    spec = resolver.cluster_spec().as_dict()
    tasks = [("chief", i) for i in range(len(spec.get("chief", [])))]
    tasks += [("worker", i) for i in range(len(spec.get("worker", [])))]
    return WorkerInfo(tasks.index((resolver.task_type, resolver.task_id)), len(tasks))


def sum_over_workers(strategy: tf.distribute.Strategy, local: np.ndarray) -> np.ndarray:
    """Element-wise sum of each worker's ``local`` array (same shape everywhere).

    Each worker's first local replica contributes its array once through the strategy's
    all-reduce. With one worker it returns ``local`` unchanged. Used to gather sharded features
    (each worker fills its rows, zeros elsewhere) and to broadcast the chief's pseudo labels.
    """
    if worker_info(strategy).count == 1:
        return local
    local_replicas = len(strategy.extended.worker_devices)

    def contribute(value):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.where(replica % local_replicas == 0, value, tf.zeros_like(value))

    @tf.function
    def all_reduce(value):
        per_replica = strategy.run(contribute, args=(value,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return all_reduce(tf.constant(local)).numpy()


class Trainer:
    """Runs epochs of ``steps_per_epoch`` distributed steps with Keras callbacks.

    Args:
      model: a compiled model with ``train_step(batch) -> StepOutput`` (replica context),
        ``finish_step(StepOutput)`` (cross-replica context, global batch) and ``metrics``; see
        :mod:`maskpre_tf.training.step`.
      strategy: the distribution strategy the model was built under.
      dataset: a function of a ``tf.distribute.InputContext`` returning that input pipeline's
        dataset of per-replica batches (``make_train_dataset(..., input_context=ctx)``: every
        worker decodes only its share), or a ``tf.data.Dataset`` of global batches that every
        worker reads whole and splits. Re-iterated once per epoch.
      steps_per_epoch: steps per epoch.
      callbacks: Keras callbacks, called in list order at each hook (see the module docstring).
      steps_per_loop: steps per ``tf.function`` call (fewer host round trips; losses and NaN
        checks per loop).
    """

    def __init__(
        self,
        model: keras.Model,
        strategy: tf.distribute.Strategy,
        dataset: tf.data.Dataset | Callable[[tf.distribute.InputContext], tf.data.Dataset],
        steps_per_epoch: int,
        callbacks: Iterable[keras.callbacks.Callback],
        steps_per_loop: int = 1,
    ):
        self.model = model
        self.strategy = strategy
        self.steps_per_epoch = int(steps_per_epoch)
        self.callbacks = keras.callbacks.CallbackList(
            list(callbacks), model=model, epochs=None, steps=steps_per_epoch
        )
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
        self._step_fn = tf.function(self._step)
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

    def fit(self, initial_epoch: int, epochs: int) -> dict[str, float]:
        """Train epochs ``initial_epoch .. epochs - 1``; returns the last epoch's logs.

        Steps run ``steps_per_loop`` at a time inside one ``tf.function`` call; the batch hooks
        see one call per loop (``on_train_batch_end(last step, mean losses of the loop)``) and
        a NaN/inf loss or BatchNorm statistic (``state_check``) stops the run at the loop where
        it appears.
        """
        model = self.model
        model.stop_training = False
        logs: dict[str, float] = {}
        self.callbacks.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            self.callbacks.on_epoch_begin(epoch)
            for metric in model.metrics:
                metric.reset_state()
            iterator = iter(self.dist_dataset)
            done = 0
            while done < self.steps_per_epoch:
                steps = min(self.steps_per_loop, self.steps_per_epoch - done)
                self.callbacks.on_train_batch_begin(done)
                scalars = self._loop_fn(iterator, steps)
                done += steps
                step_logs = {k: float(v) for k, v in scalars.items()}
                bad = [k for k, v in step_logs.items() if not math.isfinite(v)]
                if bad:
                    what = "a BatchNorm statistic" if bad == [STATE_CHECK] else "the loss"
                    raise NonFiniteLossError(
                        f"{what} became {step_logs[bad[0]]} at epoch {epoch + 1}, within steps "
                        f"{done - steps + 1}-{done}; the run stopped and the last good checkpoint "
                        "is kept. Lower --lr, use --precision=float32, or check the input images"
                    )
                self.callbacks.on_train_batch_end(done - 1, step_logs)
            logs = {m.name: float(m.result()) for m in model.metrics}
            self.callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        self.callbacks.on_train_end(logs)
        return logs
