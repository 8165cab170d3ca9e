"""Keras callbacks of a MaskPre run: clustering, evaluation, checkpoints, TensorBoard, progress.

They share one :class:`RunState` (the pseudo labels, the latest clustering statistics and
evaluation results) so that each callback does one job and the order of the list decides the
order of work at each hook: clustering at the start of an epoch; evaluation, then checkpoint,
then TensorBoard and the progress line at its end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.clustering.auto_eps import nearest_distances
from maskpre_tf.clustering.cluster import cluster_statistics, pseudo_labels
from maskpre_tf.config import TrainConfig
from maskpre_tf.data.datasets import Record
from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.extract import evaluate_model, extract_features
from maskpre_tf.training.loop import sum_over_workers, worker_info


@dataclass
class RunState:
    """Mutable state shared by the callbacks of one run.

    pseudo_labels: int64 variable [N] (checkpointed), -1 = outlier or not yet clustered.
    epoch: int64 variable, number of finished epochs (checkpointed; see :class:`EpochCounter`).
    cluster_stats / eval_results: the latest figures, merged into the epoch logs.
    """

    pseudo_labels: tf.Variable
    epoch: tf.Variable
    cluster_stats: dict = field(default_factory=dict)
    eval_results: dict = field(default_factory=dict)
    best_map: tf.Variable | None = None  # float64 variable, best validation mAP (checkpointed)
    timings: dict = field(default_factory=dict)
    nearest_distances: np.ndarray | None = None  # each image's Jaccard distance to its nearest


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

    def features(self, strategy, worker) -> np.ndarray:
        """Embeddings [N, D] of all training images; each worker embeds its share."""
        rows = np.arange(len(self.paths))[worker.index :: worker.count]
        local = extract_features(
            self.embed, [self.paths[i] for i in rows], self.cfg.data.height, self.cfg.data.width
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


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluates the teacher on query/gallery every ``every`` epochs and at the last epoch.

    With ``student`` (an embed function of the online encoder) the student is evaluated beside
    the teacher and logged as ``student_mAP`` etc. With ``val`` (a labelled validation split) it
    also tracks the best epoch by validation mAP and saves those teacher weights to
    ``best_path``; the test split never selects a model.
    """

    def __init__(
        self,
        state: RunState,
        query: Sequence[Record],
        gallery: Sequence[Record],
        cfg: TrainConfig,
        embed: Callable,
        every: int,
        last_epoch: int,
        val: tuple[Sequence[Record], Sequence[Record]] | None = None,
        best_path: str = "",
        log: Callable[[str], None] = print,
        student: Callable | None = None,
    ):
        super().__init__()
        self.state = state
        self.query, self.gallery = query, gallery
        self.cfg = cfg
        self.embed = embed
        self.student = student
        self.every = every
        self.last_epoch = last_epoch
        self.val = val
        self.best_path = best_path
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        height, width = self.cfg.data.height, self.cfg.data.width
        due = epoch + 1 == self.last_epoch or (self.every > 0 and (epoch + 1) % self.every == 0)
        start = time.perf_counter()
        if self.query and due:
            res = evaluate_model(self.embed, self.query, self.gallery, height, width)
            self.state.eval_results = res
            self.log(
                f"epoch {epoch + 1}: mAP {res['mAP']:.1%}, Rank-1 {res['rank1']:.1%}, "
                f"Rank-5 {res['rank5']:.1%}, Rank-10 {res['rank10']:.1%}"
            )
            if self.student is not None:
                res = evaluate_model(self.student, self.query, self.gallery, height, width)
                self.state.eval_results.update({f"student_{k}": v for k, v in res.items()})
                self.log(
                    f"epoch {epoch + 1}: student mAP {res['mAP']:.1%}, Rank-1 {res['rank1']:.1%}"
                )
        if self.val is not None:
            val = evaluate_model(self.embed, *self.val, height, width)
            self.state.eval_results = {**self.state.eval_results, "val_mAP": val["mAP"]}
            if val["mAP"] > float(self.state.best_map):
                self.state.best_map.assign(val["mAP"])
                runs.atomic_save_weights(self.model.teacher, self.best_path)
                self.log(f"epoch {epoch + 1}: best validation mAP so far {val['mAP']:.1%}")
        self.state.timings["eval_seconds"] = time.perf_counter() - start


class EpochCounter(keras.callbacks.Callback):
    """Counts finished epochs in ``state.epoch`` (checkpointed; the input pipeline reads it).

    At the start of epoch ``e`` the variable holds ``e``, so the training stream of that epoch
    is seeded with ``e``; it becomes ``e + 1`` at the epoch's end, before the checkpoint.
    """

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.epoch.assign(epoch + 1)


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint at every epoch's end through ``tf.train.CheckpointManager``.

    The manager writes the checkpoint's files first and then replaces the small ``checkpoint``
    index file that names the latest one, so a kill at any moment leaves the previous checkpoint
    as the latest valid one. Under multi-worker training every worker saves (saving may run
    collectives), each to its own folder; the chief's is the run's checkpoint.
    """

    def __init__(self, manager: tf.train.CheckpointManager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)


class TensorBoardCallback(keras.callbacks.Callback):
    """Writes every loss term, lr, drop rate, clustering (eps, counts, agreement, timings) and
    evaluation figures per epoch, the histogram of each image's Jaccard distance to its nearest
    neighbour, and an image panel of a few inputs with their two DropBlock masks."""

    def __init__(self, state: RunState, log_dir: str, sample_images: np.ndarray | None = None):
        super().__init__()
        self.state = state
        self.writer = tf.summary.create_file_writer(log_dir)
        self.sample_images = sample_images

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        step = epoch + 1
        scalars = dict(logs or {})
        scalars["lr"] = float(model.optimizer.learning_rate)
        scalars["drop_rate"] = float(model.drop_rate())
        scalars["ema_momentum"] = float(model.ema_momentum())
        for key in (
            "num_clusters",
            "num_outliers",
            "nmi",
            "ari",
            "pairwise_precision",
            "pairwise_recall",
            "eps",
            "extract_seconds",
            "cluster_seconds",
        ):
            if key in self.state.cluster_stats:
                scalars[f"clustering/{key}"] = float(self.state.cluster_stats[key])
        for key, value in self.state.eval_results.items():
            scalars[f"eval/{key}"] = float(value)
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            if self.state.nearest_distances is not None:
                tf.summary.histogram(
                    "clustering/nearest_jaccard_distance", self.state.nearest_distances, buckets=50
                )
            if self.sample_images is not None:
                tf.summary.image("inputs_and_masks", self.mask_panel(), max_outputs=8)
        self.writer.flush()

    def mask_panel(self) -> tf.Tensor:
        """[n, H, 3W, 3] uint8: each input beside its two masked views (dropped cells dark)."""
        model = self.model
        pixels = tf.convert_to_tensor(self.sample_images)
        fmap = model.masking_map(pixels, training=False)
        rate = tf.maximum(model.drop_rate(), model.cfg.drop_rate)
        keys = tf.range(tf.shape(pixels)[0], dtype=tf.int64)
        panels = [pixels]
        for view in (0, 1):
            _, keep = model.dropblock(fmap, model.view_keys(keys, view), rate, training=True)
            keep = tf.image.resize(
                tf.cast(keep, tf.float32), tf.shape(pixels)[1:3], method="nearest"
            )
            panels.append(pixels * (0.25 + 0.75 * keep))
        panel = tf.concat(panels, axis=2)
        return tf.cast(tf.clip_by_value(panel, 0, 255), tf.uint8)


class ProgressCallback(keras.callbacks.Callback):
    """Progress inside each epoch (a bar on a terminal, else a line every fifth of the epoch),
    one line per epoch with losses and throughput, and the per-epoch JSON summary.

    The summary (``{"epochs": [...]}``, one entry per finished epoch with its losses, clustering
    and evaluation figures and the seconds spent extracting features, clustering, stepping and
    evaluating) is rewritten atomically after every epoch. Entries already in the file from an
    earlier, interrupted run of the same output folder are kept, so a resumed run's summary holds
    its whole history.
    """

    def __init__(
        self,
        state: RunState,
        batch_size: int,
        steps: int,
        summary_path: str,
        log: Callable[[str], None] = print,
        prefix: str = "",
    ):
        super().__init__()
        self.prefix = prefix
        self.state = state
        self.batch_size = batch_size
        self.steps = steps
        self.summary_path = summary_path
        self.log = log
        self.interactive = sys.stdout.isatty()
        self.history: list[dict] = []
        if os.path.isfile(summary_path):
            with open(summary_path) as f:
                self.history = json.load(f).get("epochs", [])

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.epoch = epoch
        self.first_step = self.last_step = None
        self.bar = keras.utils.Progbar(self.steps, unit_name="step") if self.interactive else None
        self.state.timings = {}

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.first_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        """Progress inside the epoch: a bar on a terminal, else a line every fifth of it."""
        self.last_step = time.perf_counter()
        done = batch + 1
        rate = self.batch_size * done / max(self.last_step - self.first_step, 1e-9)
        loss = float((logs or {}).get("loss", float("nan")))
        if self.bar is not None:
            self.bar.update(done, values=[("loss", loss), ("img/s", rate)])
        elif done % max(1, self.steps // 5) == 0 and done < self.steps:
            eta = (self.steps - done) * self.batch_size / max(rate, 1e-9)
            self.log(f"{self.prefix}epoch {self.epoch + 1}: step {done}/{self.steps}, loss "
                     f"{loss:.3f}, {rate:.1f} img/s, ETA {eta:.0f} s")

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.first_step is not None:
            steps_seconds = self.last_step - self.first_step
            logs["steps_seconds"] = steps_seconds
            logs["images_per_second"] = self.batch_size * self.steps / max(steps_seconds, 1e-9)
            logs["epoch_seconds"] = time.perf_counter() - self.start
            terms = ", ".join(
                f"{k.removesuffix('_loss')} {v:.3f}" for k, v in logs.items() if k.endswith("_loss")
            )
            self.log(
                f"{self.prefix}epoch {epoch + 1}: loss {logs['loss']:.3f} ({terms}), "
                f"{logs['images_per_second']:.1f} img/s, {logs['epoch_seconds']:.0f} s"
            )
        logs.update(self.state.eval_results)
        logs.update(self.state.timings)
        logs.update(
            {k: v for k, v in self.state.cluster_stats.items() if isinstance(v, (int, float))}
        )
        self.history = [h for h in self.history if h["epoch"] < epoch + 1]
        self.history.append({"epoch": epoch + 1, **logs})
        os.makedirs(os.path.dirname(self.summary_path) or ".", exist_ok=True)
        tmp = self.summary_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"epochs": self.history}, f, indent=1, default=float)
        os.replace(tmp, self.summary_path)
