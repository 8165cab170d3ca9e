"""The state the callbacks of one run share (checkpointed parts are tf.Variables)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf


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
