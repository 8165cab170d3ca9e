"""The epoch of a run, top to bottom, and the order in which a run resumes.

An epoch of MaskPre (:meth:`Epoch.run`; the source phase has only steps 4, 6 and 7)::

    1. pseudo labels   every worker embeds its share of the training crops with the clustering
                       network (BatchNorm folded); the chief builds the k-reciprocal Jaccard
                       graph and runs DBSCAN at the fixed or chosen eps; the labels reach every
                       worker unchanged and are written to their home, RunState.labels
    2. memories        prototypes (and camera proxies) reset to the new clusters' centroids
    3. labels → stream the input stream reads RunState.labels when the epoch's iterator starts
    4. steps           --iters steps: model.train_step per replica (two DropBlock views, the
                       mask-prediction and clustering heads), finish_step across replicas
                       (memories, EMA teacher)
    5. evaluation      query/gallery mAP of the deployed network every --eval_every epochs and
                       at the last (best-on-validation weights with --keep_best)
    6. observers       progress line and per-epoch summary, TensorBoard: they read the epoch's
                       logs (a read-only view) and change nothing, so their order is free
    7. commit          epoch counter + 1, then the checkpoint: last, because it marks the
                       epoch done

Steps 1-3 are the pseudo-label stage (a Keras callback, ``on_epoch_begin``), 5 the evaluation
stage and 7 the commit stage (``on_epoch_end``): the only callbacks that change state, each
given its place by :meth:`Epoch.run` rather than by a list's order. The epoch's logs (one dict
per epoch) carry what each stage measured to the stages and observers after it.

Resume order (a run started again with the same command, :mod:`.phase`):

    1. the run's recorded configuration is compared with the command's settings
    2. the newest readable checkpoint is restored: model (student, teacher, memories, heads),
       optimizer, labels, epoch, best mAP, input normalisation
    3. the summaries are read back; entries of epochs after the checkpoint are replaced
    4. the first epoch after the checkpoint runs from step 1: its stream is seeded by the
       epoch, so it draws what the interrupted run drew
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import keras

from maskpre_tf.training.loop import Trainer


class Epoch:
    """One epoch of a phase, its stages in their fixed order (see the module docstring).

    Args:
      trainer: runs the steps (4).
      commit: the commit stage (7): counts the epoch, then checkpoints.
      pseudo_labels: the pseudo-label stage (1-3), or None (source phase).
      evaluation: the evaluation stage (5), or None.
      observers: read-only callbacks (6): progress, TensorBoard.
    """

    def __init__(
        self,
        trainer: Trainer,
        commit: keras.callbacks.Callback,
        pseudo_labels: keras.callbacks.Callback | None = None,
        evaluation: keras.callbacks.Callback | None = None,
        observers: Sequence[keras.callbacks.Callback] = (),
    ):
        self.trainer = trainer
        self.commit = commit
        self.pseudo_labels = pseudo_labels
        self.evaluation = evaluation
        self.observers = list(observers)
        for callback in self.callbacks:
            callback.set_model(trainer.model)

    @property
    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Every callback of the epoch, in the order :meth:`run` calls them at its end."""
        stages = [self.pseudo_labels, self.evaluation]
        return [c for c in stages if c is not None] + self.observers + [self.commit]

    def run(self, epoch: int) -> dict:
        """Epoch ``epoch`` (0-based), steps 1-7; its logs."""
        logs: dict = {}
        view = MappingProxyType(logs)
        for observer in self.observers:
            observer.on_epoch_begin(epoch, view)
        if self.pseudo_labels is not None:  # 1-3: labels, memories, the stream's labels
            self.pseudo_labels.on_epoch_begin(epoch, logs)
        logs.update(self.trainer.train_epoch(epoch, self.observers))  # 4: steps
        if self.evaluation is not None:  # 5: evaluation
            self.evaluation.on_epoch_end(epoch, logs)
        for observer in self.observers:  # 6: observers
            observer.on_epoch_end(epoch, view)
        self.commit.on_epoch_end(epoch, logs)  # 7: commit, last
        return logs

    def run_all(self, first: int, epochs: int) -> dict:
        """Epochs ``first .. epochs - 1``; the last one's logs (empty if none ran)."""
        logs: dict = {}
        for observer in self.observers:
            observer.on_train_begin()
        for epoch in range(first, epochs):
            logs = self.run(epoch)
        for observer in self.observers:
            observer.on_train_end(dict(logs))
        return logs
