"""TensorBoard: every loss term, schedule, clustering and evaluation figure of each epoch."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf.training.state import RunState


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
                tf.summary.image(
                    "inputs_and_masks", model.mask_panel(self.sample_images), max_outputs=8
                )
        self.writer.flush()
