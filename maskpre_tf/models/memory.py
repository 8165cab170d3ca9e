"""Cluster memories: the prototypes each training image is contrasted against, and their updates.

Two memories, both reset from pseudo-label centroids after every clustering and both updated
after every step, touching only the rows of the batch's clusters:

* :class:`ClusterMemory` — one prototype per pseudo identity (Cluster Contrast, Dai et al.,
  2021). Updates: ``mean`` (each cluster present in the batch moves towards the mean of its
  batch features), ``instance`` (cluster-contrast's: one momentum step per sample, in batch
  order), ``hard`` (cluster-contrast's hard variant: one step with the batch sample least similar
  to its prototype).
* :class:`CameraMemory` — one proxy per (cluster, camera) pair (CAP, Wang et al., AAAI 2021):
  an intra-camera loss contrasts a sample with the proxies of its own camera, an inter-camera
  loss pulls it towards every proxy of its cluster against the hardest proxies of other
  clusters. Needs camera ids; the same losses serve both MaskPre views.

Logits and softmax run over the live rows only (``num_active``), never over the capacity.
Memory state lives in non-trainable variables created by the owning model; the functions here
are pure or update given variables, and run in cross-replica context for the updates.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from maskpre_tf.models.replicated import local_copy, update_each_copy

UPDATES = ("mean", "instance", "hard")


def _active(table: tf.Variable, num_active: tf.Tensor) -> tf.Tensor:
    """The first ``num_active`` rows of a [capacity, ...] table ([K, ...]), read sparsely."""
    return read_rows(table, tf.range(tf.cast(num_active, tf.int32)))


def momentum_step(rows: tf.Tensor, features: tf.Tensor, momentum: float) -> tf.Tensor:
    """normalize(momentum · rows + (1 − momentum) · normalize(features)), rows-wise [n, D]."""
    features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
    return tf.math.l2_normalize(momentum * rows + (1.0 - momentum) * features, axis=-1)


def read_rows(table, rows: tf.Tensor) -> tf.Tensor:
    """table[rows] [n, ...] by a sparse read of this replica's copy: only those rows are read.

    ``tf.gather`` on a mirrored variable (no ``sparse_read``) falls back to a dense read, and
    once a scatter has put the variable in copy-on-read mode every dense read copies the whole
    [capacity, D] table (measured: most of a real training step's time).
    """
    return local_copy(table).sparse_read(rows)


def step_rows(table: tf.Variable, rows: tf.Tensor, features: tf.Tensor, momentum: float) -> None:
    """table[rows] ← momentum_step(table[rows], features) on every replica's own copy.

    Cross-replica context: each copy reads its own rows (sparse) and receives the same scatter of
    the same inputs, so mirrored copies stay identical and no state is broadcast. ``rows`` [n]
    must be distinct.
    """

    def step(var, r, f):
        var.scatter_nd_update(r[:, None], momentum_step(read_rows(var, r), f, momentum))

    update_each_copy(table, step, rows, features)


def occurrence(rows: tf.Tensor) -> tf.Tensor:
    """How many earlier entries of ``rows`` [n] hold the same row: int32 [n] (0 for the first)."""
    same = tf.equal(rows[:, None], rows[None, :])
    earlier = tf.linalg.band_part(tf.ones_like(same, tf.int32), -1, 0) - tf.eye(
        tf.shape(rows)[0], dtype=tf.int32
    )
    return tf.reduce_sum(tf.cast(same, tf.int32) * earlier, axis=1)


def update_rows(
    table: tf.Variable, features: tf.Tensor, rows: tf.Tensor, momentum: float, mode: str
) -> None:
    """Momentum-update rows of ``table`` with batch features (only those rows are written).

    Args:
      table: float32 variable [capacity, D], rows L2-normalised.
      features: float [B, D], the batch's embeddings (normalised here).
      rows: int [B], the row of each sample; rows < 0 (outliers) are ignored.
      momentum: share of the old row kept per step, in [0, 1].
      mode: "mean", "instance" or "hard" (see the module docstring).
    """
    features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
    rows = tf.cast(rows, tf.int32)
    keep = rows >= 0
    features, rows = tf.boolean_mask(features, keep), tf.boolean_mask(rows, keep)
    if mode == "instance":  # one step per sample in batch order, as cluster-contrast's backward
        # Round r steps every row by its r-th sample of the batch: each row sees its samples in
        # batch order, and rows of a round are distinct, so one scatter serves a whole round
        # (K rounds for P x K batches instead of one step per sample).
        rank = occurrence(rows)

        def one_round(r):
            picked = tf.where(tf.equal(rank, r))[:, 0]
            step_rows(table, tf.gather(rows, picked), tf.gather(features, picked), momentum)
            return (r + 1,)

        rounds = tf.reduce_max(tf.concat([rank, [-1]], 0)) + 1
        tf.while_loop(lambda r: r < rounds, one_round, (tf.constant(0),))
        return
    unique, slot = tf.unique(rows)
    if mode == "mean":
        count = tf.math.unsorted_segment_sum(tf.ones_like(rows, tf.float32), slot, tf.size(unique))
        chosen = tf.math.unsorted_segment_sum(features, slot, tf.size(unique)) / count[:, None]
    elif mode == "hard":
        similarity = tf.reduce_sum(features * read_rows(table, rows), axis=-1)
        lowest = tf.math.unsorted_segment_min(similarity, slot, tf.size(unique))
        is_hardest = similarity <= tf.gather(lowest, slot)
        # The first sample reaching each cluster's minimum (ties: lowest batch position).
        position = tf.where(is_hardest, tf.range(tf.size(rows)), tf.size(rows))
        first = tf.math.unsorted_segment_min(position, slot, tf.size(unique))
        chosen = tf.gather(features, first)
    else:
        raise ValueError(f"memory update {mode!r}: expected one of {', '.join(UPDATES)}")
    step_rows(table, unique, chosen, momentum)


class ClusterMemory(tf.Module):
    """One prototype per pseudo identity: table [capacity, D], ``num_active`` live rows."""

    def __init__(self, capacity: int, dim: int, name: str = "cluster_memory"):
        super().__init__(name=name)
        self.table = tf.Variable(tf.zeros((capacity, dim)), trainable=False, name="prototypes")
        self.num_active = tf.Variable(0, dtype=tf.int32, trainable=False, name="num_clusters")

    def reset(self, centroids: np.ndarray) -> None:
        """Rows 0..K-1 ← L2-normalised centroids [K, D]; the rest zero."""
        centroids = tf.math.l2_normalize(tf.convert_to_tensor(centroids, tf.float32), axis=-1)
        k = int(centroids.shape[0])
        rest = tf.zeros((int(self.table.shape[0]) - k, int(self.table.shape[1])))
        self.table.assign(tf.concat([centroids, rest], 0))
        self.num_active.assign(k)

    def logits(self, features: tf.Tensor, temperature: float) -> tf.Tensor:
        """Cosine logits [B, K] of features against the live prototypes, divided by τ."""
        features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
        protos = tf.stop_gradient(_active(self.table, self.num_active))
        return tf.matmul(features, protos, transpose_b=True) / temperature


class CameraMemory(tf.Module):
    """One proxy per (cluster, camera) pair, with the sample → proxy map of the epoch.

    Variables: ``table`` [capacity, D] proxies; ``proxy_cluster``/``proxy_camera`` [capacity]
    the cluster and camera of each proxy; ``sample_proxy`` [N] each training image's proxy
    (-1 for outliers); ``num_active`` live proxies.
    """

    def __init__(self, capacity: int, dim: int, num_train: int, name: str = "camera_memory"):
        super().__init__(name=name)
        self.table = tf.Variable(tf.zeros((capacity, dim)), trainable=False, name="proxies")
        self.proxy_cluster = tf.Variable(
            tf.fill([capacity], -1), trainable=False, name="proxy_cluster"
        )
        self.proxy_camera = tf.Variable(
            tf.fill([capacity], -1), trainable=False, name="proxy_camera"
        )
        self.sample_proxy = tf.Variable(
            tf.fill([num_train], -1), trainable=False, name="sample_proxy"
        )
        self.num_active = tf.Variable(0, dtype=tf.int32, trainable=False, name="num_proxies")

    def reset(self, features: np.ndarray, labels: np.ndarray, camids: np.ndarray) -> None:
        """Proxies ← centroids of every (cluster, camera) group of the clustered images.

        Args:
          features: float [N, D] the features that were clustered.
          labels: int [N] pseudo labels, -1 = outlier. camids: int [N].
        """
        proxy_of, clusters, cameras = camera_proxies(labels, camids)
        count = len(clusters)
        sums = np.zeros((count, features.shape[1]), np.float64)
        keep = proxy_of >= 0
        np.add.at(sums, proxy_of[keep], features[keep])
        centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-12)
        capacity = int(self.table.shape[0])
        pad = capacity - count
        self.table.assign(
            np.concatenate([centroids, np.zeros((pad, features.shape[1]))]).astype(np.float32)
        )
        self.proxy_cluster.assign(np.concatenate([clusters, np.full(pad, -1)]).astype(np.int32))
        self.proxy_camera.assign(np.concatenate([cameras, np.full(pad, -1)]).astype(np.int32))
        self.sample_proxy.assign(proxy_of.astype(np.int32))
        self.num_active.assign(count)

    def losses(
        self, features: tf.Tensor, index: tf.Tensor, temperature: float, hard_negatives: int
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """CAP's intra- and inter-camera losses per sample, float32 ([B], [B]).

        intra_i = −log softmax over the proxies of i's camera, at i's own proxy.
        inter_i = −(1/|P|) Σ_{p in P} log(e^{s_p} / Σ_{u in P ∪ Q} e^{s_u}), P the proxies of
                  i's cluster, Q the k hardest (highest-scoring) proxies of other clusters: a
                  softmax over positives and hard negatives with the target spread evenly over
                  the positives, as CAP defines it. Outliers (no proxy) contribute 0.
        """
        count = self.num_active
        proxy = read_rows(self.sample_proxy, tf.cast(index, tf.int32))
        valid = proxy >= 0
        safe = tf.maximum(proxy, 0)
        table = tf.stop_gradient(_active(self.table, count))
        cluster_of = _active(self.proxy_cluster, count)
        camera_of = _active(self.proxy_camera, count)
        features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
        logits = tf.matmul(features, table, transpose_b=True) / temperature  # [B, P]
        my_camera = read_rows(self.proxy_camera, safe)[:, None]
        my_cluster = read_rows(self.proxy_cluster, safe)[:, None]
        same_camera = tf.equal(camera_of[None, :], my_camera)
        intra = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe, logits=tf.where(same_camera, logits, -1e9)
        )
        positive = tf.equal(cluster_of[None, :], my_cluster)
        k = tf.minimum(hard_negatives, tf.maximum(count - 1, 1))
        negatives, _ = tf.math.top_k(tf.where(positive, -1e9, logits), k=k)  # [B, k]
        positives = tf.where(positive, logits, -1e9)
        log_norm = tf.reduce_logsumexp(tf.concat([positives, negatives], -1), -1, keepdims=True)
        positive_f = tf.cast(positive, tf.float32)
        inter = tf.reduce_sum((log_norm - logits) * positive_f, -1) / tf.maximum(
            tf.reduce_sum(positive_f, -1), 1.0
        )
        zero = tf.zeros_like(intra)
        return tf.where(valid, intra, zero), tf.where(valid, inter, zero)

    def update(self, features: tf.Tensor, index: tf.Tensor, momentum: float) -> None:
        """Per-instance momentum update of each sample's proxy (CAP's memory update)."""
        rows = read_rows(self.sample_proxy, tf.cast(index, tf.int32))
        update_rows(self.table, features, rows, momentum, "instance")


def camera_proxies(
    labels: np.ndarray, camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number the (cluster, camera) groups of a labelling.

    Args:
      labels: int [N], -1 = outlier. camids: int [N].

    Returns:
      (proxy of each sample int64 [N] (-1 for outliers), cluster of each proxy [P],
      camera of each proxy [P]); proxies are ordered by (cluster, camera).
    """
    labels = np.asarray(labels, np.int64)
    camids = np.asarray(camids, np.int64)
    keep = labels >= 0
    pairs = np.stack([labels[keep], camids[keep]], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    proxy_of = np.full(labels.shape, -1, np.int64)
    proxy_of[keep] = inverse.ravel()
    return proxy_of, unique[:, 0], unique[:, 1]
