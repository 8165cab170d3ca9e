"""The per-epoch clustering step: features → pseudo labels → memories and sampler."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from maskpre_tf.clustering.auto_eps import nearest_distances
from maskpre_tf.clustering.cluster import cluster_statistics, pseudo_labels
from maskpre_tf.config import TrainConfig
from maskpre_tf.data.datasets import Record
from maskpre_tf.data.decoded import decode_images, decoded_mib
from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.extract import extract_features
from maskpre_tf.training.loop import sum_over_workers, worker_info
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
    """At each epoch's start: teacher features → pseudo labels → prototypes and sampler.

    Ground-truth training ids (when the dataset has them) are used only for NMI/ARI
    diagnostics. A clustering with fewer clusters than a batch needs stops the run with
    :class:`TooFewClustersError` (a user error naming eps, clusters, outliers and what to try):
    without training the next clustering would see the same features, so skipping epochs would
    only end in a run that trained nothing.
    """

    def __init__(
        self,
        state: RunState,
        train: Sequence[Record],
        sampler: PKSampler,
        cfg: TrainConfig,
        embed: Callable,
        log: Callable[[str], None] = print,
    ):
        super().__init__()
        self.state = state
        self.paths = [r.path for r in train]
        self.camids = np.array([r.camid for r in train])
        pids = np.array([r.pid for r in train])
        self.true_pids = pids if (pids >= 0).all() else None
        self.sampler = sampler
        self.cfg = cfg
        self.embed = embed
        self.log = log
        self.images: np.ndarray | list[str] | None = None  # this worker's share, see share()

    def share(self, rows: np.ndarray) -> np.ndarray | list[str]:
        """This worker's training images: decoded once and kept when they fit
        ``--image_cache_mib`` (uint8 [n, H, W, 3]), else their paths (decoded each epoch)."""
        if self.images is None:
            height, width = self.cfg.data.height, self.cfg.data.width
            paths = [self.paths[i] for i in rows]
            need = decoded_mib(len(paths), height, width)
            budget = self.cfg.clustering.image_cache_mib
            if need <= budget:
                self.images = decode_images(paths, height, width)
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
        local = extract_features(
            self.embed, self.share(rows), self.cfg.data.height, self.cfg.data.width
        )
        if worker.count == 1:
            return local
        full = np.zeros((len(self.paths), local.shape[1]), np.float32)
        full[rows] = local
        return sum_over_workers(strategy, full)

    def on_epoch_begin(self, epoch, logs=None):
        cfg = self.cfg.clustering
        start = time.perf_counter()
        strategy = self.model.distribute_strategy
        worker = worker_info(strategy)
        features = self.features(strategy, worker)
        extracted = time.perf_counter()
        labels = np.zeros(len(self.paths), np.float64)
        eps, nearest = 0.0, None
        if worker.is_chief:  # the chief clusters; every worker receives its labels
            labels, eps, dist = pseudo_labels(
                features,
                cfg.fixed_eps,
                min_samples=cfg.min_samples,
                k1=cfg.k1,
                k2=cfg.k2,
                camids=self.camids if cfg.camera_aware else None,
                rule=cfg.auto_rule,
                tolerance=cfg.eps_tolerance,
            )
            nearest = nearest_distances(dist)
        shared = sum_over_workers(strategy, np.append(labels.astype(np.float64), eps))
        labels, eps = np.rint(shared[:-1]).astype(np.int64), float(shared[-1])
        stats = cluster_statistics(labels, self.true_pids)
        stats["eps"] = eps
        self.state.nearest_distances = nearest
        stats["extract_seconds"] = extracted - start
        stats["cluster_seconds"] = time.perf_counter() - extracted
        self.state.cluster_stats = stats
        if cfg.outliers == "instances":
            labels = outliers_as_instances(labels)
        self.state.pseudo_labels.assign(labels.astype(np.int64))
        needed = self.cfg.optim.num_ids_per_batch
        if int(labels.max(initial=-1)) + 1 < needed:
            raise TooFewClustersError(
                f"epoch {epoch + 1}: clustering at eps {eps:.3f} found "
                f"{stats['num_clusters']} clusters and {stats['num_outliers']} outliers among "
                f"{len(labels)} images, fewer clusters than the {needed} identities a batch "
                "needs; nothing was trained on them and the next epoch would cluster the same "
                "features, so the run stops (the last checkpoint is kept). Try --eps=auto, a "
                "larger --eps (more images join clusters) or a smaller one (merged clusters "
                "split), --outliers=instances, or fewer identities per batch (--batch_size / "
                "--num_instances)"
            )
        with self.model.distribute_strategy.scope():
            self.model.reset_memories(features, labels, self.camids)
        self.sampler.set_labels(labels)
        diag = "".join(f", {k} {stats[k]:.3f}" for k in ("nmi", "ari") if k in stats)
        self.log(
            f"epoch {epoch + 1}: eps {eps:.3f}: {stats['num_clusters']} clusters, "
            f"{stats['num_outliers']} outliers{diag} (features {stats['extract_seconds']:.0f} s, "
            f"clustering {stats['cluster_seconds']:.0f} s)"
        )
