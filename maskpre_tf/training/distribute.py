"""Where a run runs: the tf.distribute strategy, this worker's place, cross-worker exchange.

``--strategy`` names the strategy (:func:`make_strategy`); ``TF_CONFIG`` places a worker in a
multi-worker cluster (:func:`worker_info`: index 0 is the chief, which writes the run's files).
Features extracted in shards are summed over workers (:func:`sum_over_workers`); the chief's
pseudo labels reach every worker unchanged (:func:`broadcast_from_chief`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from maskpre_tf.config_fields import STRATEGIES
from maskpre_tf.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for ``--strategy``.

    - ``default``: no distribution (one device).
    - ``mirrored``: every local GPU, synchronous all-reduce; with one GPU or none, the default
      strategy on that device (the same numbers: a ``MirroredStrategy`` over one device adds
      nothing but a per-device input iterator, whose teardown stalls up to a minute at
      epoch ends in TensorFlow 2.21).
    - ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if len(tf.config.list_logical_devices("GPU")) <= 1:
            return tf.distribute.get_strategy()
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
    raise UserError(f"--strategy={name}: expected {', '.join(STRATEGIES)}")


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
    (each worker fills its rows, zeros elsewhere).
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


def broadcast_from_chief(strategy: tf.distribute.Strategy, value: np.ndarray) -> np.ndarray:
    """The chief's ``value`` on every worker (same shape and dtype everywhere; exact).

    Every replica gathers every replica's copy (``all_gather``) and keeps the first, the
    chief's first replica. With one worker it returns ``value`` unchanged.
    """
    if worker_info(strategy).count == 1:
        return value

    @tf.function
    def gather(tensor):
        def first(v):
            return tf.distribute.get_replica_context().all_gather(v[None], axis=0)[0]

        per_replica = strategy.run(first, args=(tensor,))
        return strategy.experimental_local_results(per_replica)[0]

    return gather(tf.constant(value)).numpy()
