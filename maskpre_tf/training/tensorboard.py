"""TensorBoard: every loss term, schedule, clustering and evaluation figure of each epoch."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf.training.contracts import MonitoredModel

# Clustering figures of the epoch's logs, plotted under "clustering/".
CLUSTERING_KEYS = (
    "num_clusters",
    "num_outliers",
    "nmi",
    "ari",
    "pairwise_precision",
    "pairwise_recall",
    "eps",
    "extract_seconds",
    "cluster_seconds",
)
# Evaluation figures are the logs' keys with these stems (the other network's too, prefixed).
EVAL_STEMS = ("mAP", "rank1", "rank5", "rank10", "eval_seconds")


def epoch_scalars(logs: Mapping) -> dict[str, float]:
    """The epoch's numbers as TensorBoard tags: losses as they are, clustering and evaluation
    figures under "clustering/" and "eval/"."""
    scalars = {}
    for key, value in logs.items():
        if not isinstance(value, int | float):
            continue
        if key in CLUSTERING_KEYS:
            scalars[f"clustering/{key}"] = float(value)
        elif key.endswith(EVAL_STEMS):
            scalars[f"eval/{key}"] = float(value)
        elif key.endswith("loss"):
            scalars[key] = float(value)
    return scalars


class TensorBoardCallback(keras.callbacks.Callback):
    """Writes every loss term, lr, drop rate, clustering (eps, counts, agreement, timings) and
    evaluation figures per epoch, the histogram of each image's Jaccard distance to its nearest
    neighbour, and an image panel of a few inputs with their two DropBlock masks.

    An observer: it reads the epoch's logs and the model (:class:`MonitoredModel`) and changes
    nothing. ``sample_images``: float32 [n, H, W, 3] RGB pixels in 0-255 for the mask panel.
    """

    def __init__(self, log_dir: str, sample_images: np.ndarray | None = None):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.sample_images = sample_images

    def on_epoch_end(self, epoch, logs: Mapping | None = None):
        model: MonitoredModel = self.model
        logs = logs or {}
        scalars = epoch_scalars(logs)
        scalars["lr"] = float(self.model.optimizer.learning_rate)
        scalars["drop_rate"] = float(model.drop_rate())
        scalars["ema_momentum"] = float(model.ema_momentum())
        with self.writer.as_default(step=epoch + 1):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            nearest = logs.get("nearest_jaccard_distance")
            if nearest is not None:
                tf.summary.histogram("clustering/nearest_jaccard_distance", nearest, buckets=50)
            if self.sample_images is not None:
                tf.summary.image(
                    "inputs_and_masks", model.mask_panel(self.sample_images), max_outputs=8
                )
        self.writer.flush()
