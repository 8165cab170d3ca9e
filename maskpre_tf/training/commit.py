"""The commit stage: the epoch counted, then the checkpoint that marks it done."""

from __future__ import annotations

import keras
import tensorflow as tf

from maskpre_tf.training.state import RunState


class CommitCallback(keras.callbacks.Callback):
    """At each epoch's end, last of all: ``state.epoch`` ← epoch + 1, then a checkpoint.

    At the start of epoch ``e`` the counter holds ``e``, so the training stream of that epoch is
    seeded with ``e``; it becomes ``e + 1`` at the epoch's end, just before the checkpoint.

    The manager writes the checkpoint's files first and then replaces the small ``checkpoint``
    index file that names the latest one, so a kill at any moment leaves the previous checkpoint
    as the latest valid one. Under multi-worker training every worker saves (saving may run
    collectives), each to its own folder; the chief's is the run's checkpoint.
    """

    def __init__(self, state: RunState, manager: tf.train.CheckpointManager):
        super().__init__()
        self.state = state
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        self.state.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
