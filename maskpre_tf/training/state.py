"""What a run checkpoints besides the model and its optimizer: declared here, in one place.

Each variable has one owner that writes it and a list of readers:

=============  ======================================  =====================================
variable       written by                              read by
=============  ======================================  =====================================
epoch          the commit stage (finished epochs)      the input stream (seeds epoch e
                                                       with e), resume
labels         the pseudo-label stage (each epoch's    the input stream, when each epoch's
               clustering); a source phase: the        iterator starts
               identities, once
best_map       the evaluation stage (--keep_best)      the evaluation stage
input_norm     the run's configuration, once           resume (must match the weights)
=============  ======================================  =====================================

Everything else an epoch produces (clustering figures, evaluation results, timings) lives in
that epoch's logs (:mod:`.epoch`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf


@dataclass
class RunState:
    """The checkpointed state of a phase (see the module docstring).

    epoch: int64 scalar variable. labels: int64 [N] variable, -1 = outlier or not yet
    clustered. best_map: float64 scalar variable, or None. input_norm: string scalar variable,
    or None.
    """

    epoch: tf.Variable
    labels: tf.Variable
    best_map: tf.Variable | None = None
    input_norm: tf.Variable | None = None

    @classmethod
    def create(
        cls, labels: np.ndarray, input_norm: str | None = None, track_best: bool = False
    ) -> RunState:
        """A fresh state: epoch 0, ``labels`` int [N], optionally the best mAP and input norm."""
        return cls(
            epoch=tf.Variable(0, dtype=tf.int64, trainable=False),
            labels=tf.Variable(np.asarray(labels, np.int64), trainable=False),
            best_map=tf.Variable(-1.0, dtype=tf.float64, trainable=False) if track_best else None,
            input_norm=None if input_norm is None else tf.Variable(input_norm, trainable=False),
        )

    def checkpoint(self, model, with_labels: bool = True) -> tf.train.Checkpoint:
        """The checkpoint of ``model``, its optimizer and this state (``with_labels=False``: a
        source phase, whose labels are fixed identities)."""
        items = {"model": model, "optimizer": model.optimizer, "epoch": self.epoch}
        if with_labels:
            items["pseudo_labels"] = self.labels
        if self.best_map is not None:
            items["best_map"] = self.best_map
        if self.input_norm is not None:
            items["input_norm"] = self.input_norm
        return tf.train.Checkpoint(**items)
