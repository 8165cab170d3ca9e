"""The pseudo-label stage of an epoch: features → pseudo labels → their home and the memories."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from maskpre_tf.clustering.auto_eps import nearest_distances
from maskpre_tf.clustering.cluster import cluster_statistics, pseudo_labels
from maskpre_tf.config import ClusteringConfig
from maskpre_tf.data.datasets import Record
from maskpre_tf.data.decoded import decode_images, decoded_mib
from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.extract import extract_features
from maskpre_tf.training.distribute import broadcast_from_chief, sum_over_workers, worker_info
from maskpre_tf.training.state import RunState


def outliers_as_instances(labels: np.ndarray) -> np.ndarray:
    """Give every outlier (-1) its own new cluster id after the existing ones.

    SpCL's hybrid memory (Ge et al., NeurIPS 2020) keeps un-clustered instances as their own
    classes instead of discarding them. labels [N] in -1..K-1 → [N] in 0..K+n_outliers-1.
    """
    out = labels.copy()
    outliers = out < 0
    out[outliers] = out.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    return out


class TooFewClustersError(UserError):
    """Clustering found too few clusters for one P x K batch; the run cannot proceed."""


class ClusteringCallback(keras.callbacks.Callback):
    """At each epoch's start: features → pseudo labels → ``state.labels`` and the memories.

    Steps 1-3 of the epoch (:mod:`maskpre_tf.training.epoch`): every worker embeds its share of
    the training crops with ``embed`` (the clustering network), the chief clusters
    (:func:`~maskpre_tf.clustering.cluster.pseudo_labels`), every worker receives the chief's
    labels, writes them to their home (``state.labels``, which the input stream reads when the
    epoch's iterator starts) and resets the model's memories to the clusters' centroids. The
    clustering's figures go into the epoch's logs. Ground-truth training ids (when the dataset
    has them) are used only for NMI/ARI diagnostics. A clustering with fewer clusters than a
    batch needs stops the run with :class:`TooFewClustersError` (a user error naming eps,
    clusters, outliers and what to try): without training the next clustering would see the
    same features, so skipping epochs would only end in a run that trained nothing.

    Args:
      state: the run's state (its ``labels`` are written here).
      train: the training records (paths, cameras, and ids used for diagnostics only).
      cfg: the clustering settings.
      size: (height, width) of the network's input.
      identities_per_batch: P, the clusters a batch needs.
      embed: pixels [B, H, W, 3] in 0-255 → embeddings [B, D] (the clustering network).
      log: where progress lines go.
    """

    def __init__(
        self,
        state: RunState,
        train: Sequence[Record],
        cfg: ClusteringConfig,
        size: tuple[int, int],
        identities_per_batch: int,
        embed: Callable,
        log: Callable[[str], None] = print,
    ):
        super().__init__()
        self.state = state
        self.paths = [r.path for r in train]
        self.camids = np.array([r.camid for r in train])
        pids = np.array([r.pid for r in train])
        self.true_pids = pids if (pids >= 0).all() else None
        self.cfg = cfg
        self.size = size
        self.needed = identities_per_batch
        self.embed = embed
        self.log = log
        self.images: np.ndarray | list[str] | None = None  # this worker's share, see share()

    def share(self, rows: np.ndarray) -> np.ndarray | list[str]:
        """This worker's training images: decoded once and kept when they fit
        ``--image_cache_mib`` (uint8 [n, H, W, 3]), else their paths (decoded each epoch)."""
        if self.images is None:
            paths = [self.paths[i] for i in rows]
            need = decoded_mib(len(paths), *self.size)
            budget = self.cfg.image_cache_mib
            if need <= budget:
                self.images = decode_images(paths, *self.size)
                self.log(f"clustering: {len(paths)} training crops decoded once ({need:.0f} MiB)")
            else:
                self.images = paths
                if budget:
                    self.log(
                        f"clustering: the {len(paths)} training crops need {need:.0f} MiB "
                        f"decoded, more than --image_cache_mib={budget}; they are decoded "
                        "again each epoch (raise --image_cache_mib to keep them)"
                    )
        return self.images

    def features(self, strategy, worker) -> np.ndarray:
        """Embeddings [N, D] of all training images; each worker embeds its share."""
        rows = np.arange(len(self.paths))[worker.index :: worker.count]
        local = extract_features(self.embed, self.share(rows), *self.size)
        if worker.count == 1:
            return local
        full = np.zeros((len(self.paths), local.shape[1]), np.float32)
        full[rows] = local
        return sum_over_workers(strategy, full)

    def cluster(self, features: np.ndarray, is_chief: bool) -> tuple[np.ndarray, float, dict]:
        """(labels [N] int64, eps, figures) on the chief; zeros and no figures elsewhere."""
        if not is_chief:
            return np.zeros(len(self.paths), np.int64), 0.0, {}
        clustering = pseudo_labels(features, self.cfg, self.camids)
        figures = {"nearest_jaccard_distance": nearest_distances(clustering.graph)}
        return clustering.labels, clustering.eps, figures

    def on_epoch_begin(self, epoch, logs=None):
        """Steps 1-3 of the epoch; the clustering's figures go into ``logs``."""
        logs = {} if logs is None else logs
        start = time.perf_counter()
        strategy = self.model.distribute_strategy
        worker = worker_info(strategy)
        features = self.features(strategy, worker)
        extracted = time.perf_counter()
        labels, eps, figures = self.cluster(features, worker.is_chief)
        labels = broadcast_from_chief(strategy, labels)
        eps = float(broadcast_from_chief(strategy, np.float64(eps)))
        stats = {**cluster_statistics(labels, self.true_pids), **figures, "eps": eps}
        stats["extract_seconds"] = extracted - start
        stats["cluster_seconds"] = time.perf_counter() - extracted
        logs.update(stats)
        if self.cfg.outliers == "instances":
            labels = outliers_as_instances(labels)
        if int(labels.max(initial=-1)) + 1 < self.needed:
            raise TooFewClustersError(
                f"epoch {epoch + 1}: clustering at eps {eps:.3f} found "
                f"{stats['num_clusters']} clusters and {stats['num_outliers']} outliers among "
                f"{len(labels)} images, fewer clusters than the {self.needed} identities a batch "
                "needs; nothing was trained on them and the next epoch would cluster the same "
                "features, so the run stops (the last checkpoint is kept). Try --eps=auto, a "
                "larger --eps (more images join clusters) or a smaller one (merged clusters "
                "split), --outliers=instances, or fewer identities per batch (--batch_size / "
                "--num_instances)"
            )
        self.state.labels.assign(labels.astype(np.int64))
        with strategy.scope():
            self.model.reset_memories(features, labels, self.camids)
        diag = "".join(f", {k} {stats[k]:.3f}" for k in ("nmi", "ari") if k in stats)
        self.log(
            f"epoch {epoch + 1}: eps {eps:.3f}: {stats['num_clusters']} clusters, "
            f"{stats['num_outliers']} outliers{diag} (features {stats['extract_seconds']:.0f} s, "
            f"clustering {stats['cluster_seconds']:.0f} s)"
        )
