"""A phase of a run, resumable: supervised source pre-training or the MaskPre epochs.

Both phases are the same machine: a model, its checkpointed :class:`~.state.RunState`, a
training stream, and epochs of :class:`~.epoch.Epoch` (steps, then the commit of each epoch in
a checkpoint); MaskPre adds the pseudo-label and evaluation stages. :meth:`Phase.resume`
restores the newest readable checkpoint (resume order: :mod:`.epoch`); :meth:`Phase.run` runs
the epochs left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.data.pipeline import TrainStream, make_train_dataset
from maskpre_tf.errors import UserError
from maskpre_tf.training.commit import CommitCallback
from maskpre_tf.training.contracts import TrainableModel
from maskpre_tf.training.epoch import Epoch
from maskpre_tf.training.loop import Trainer
from maskpre_tf.training.state import RunState


@dataclass
class Phase:
    """One resumable phase.

    Attributes:
      model: the model trained (keeps :class:`~.contracts.TrainableModel`).
      strategy: the strategy it was built under.
      stream: the training stream (its ``labels`` and ``epoch`` read ``state``).
      state: the checkpointed state.
      epochs: the phase's epochs.
      checkpoints: this worker's checkpoint folder (the chief's is the run's).
      resume_from: the folder every worker resumes from (the chief's).
      with_labels: checkpoint ``state.labels`` (pseudo labels; not a source's identities).
      steps_per_loop: steps per ``tf.function`` call.
      pseudo_labels, evaluation: the epoch's stages (None: none).
      observers: read-only callbacks (progress, TensorBoard).
      log: where progress lines go.
    """

    model: TrainableModel
    strategy: tf.distribute.Strategy
    stream: TrainStream
    state: RunState
    epochs: int
    checkpoints: str
    resume_from: str
    with_labels: bool = True
    steps_per_loop: int = 1
    pseudo_labels: keras.callbacks.Callback | None = None
    evaluation: keras.callbacks.Callback | None = None
    observers: Sequence[keras.callbacks.Callback] = field(default_factory=list)
    log: Callable[[str], None] = print

    def __post_init__(self):
        self.checkpoint = self.state.checkpoint(self.model, with_labels=self.with_labels)

    def resume(self) -> int:
        """Restore the newest readable checkpoint, if any; the epochs it holds (0: none)."""
        return restore_or_start(self.checkpoint, self.resume_from, self.state, self.log)

    def run(self, first: int) -> dict:
        """Epochs ``first .. epochs - 1``, each committed in a checkpoint; the last one's logs.

        Each input pipeline (worker) decodes only its own share of every batch.
        """
        manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoints, max_to_keep=3)
        trainer = Trainer(
            self.model,
            self.strategy,
            lambda ctx: make_train_dataset(self.stream, ctx),
            self.stream.num_batches,
            self.steps_per_loop,
        )
        epoch = Epoch(
            trainer,
            CommitCallback(self.state, manager),
            self.pseudo_labels,
            self.evaluation,
            self.observers,
        )
        return epoch.run_all(first, self.epochs)


def restore_or_start(
    checkpoint: tf.train.Checkpoint,
    folder: str,
    state: RunState,
    log: Callable[[str], None] = print,
) -> int:
    """Restore the newest readable checkpoint in ``folder``, if any; returns the epochs done.

    A checkpoint whose files are damaged (a truncated copy, a full disk at write time) is
    passed over, with a message, for the previous one the manager kept. ``state.input_norm``
    (the checkpointed normalisation of the run's inputs), if any, must equal the value it holds
    now.

    Raises:
      UserError: the checkpoints were written by another model or input normalisation, or
        none of them can be read.
    """
    expected = None if state.input_norm is None else state.input_norm.numpy().decode()
    candidates = runs.checkpoints_newest_first(folder)
    for path in candidates:
        status = None
        try:
            with runs.quiet_restore():
                status = checkpoint.restore(path)
                status.assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError, OSError) as err:  # damaged files
            log(f"note: {path} is unreadable ({type(err).__name__}); trying the one before it")
            continue
        except (AssertionError, ValueError) as err:
            if status is not None:  # no warning per unmatched value when the status goes
                status.expect_partial()
            raise UserError(
                f"{path} does not fit the model these settings build (another backbone, memory "
                "or head than the run was trained with?); resume with the run's own settings "
                f"(its config.json) or pass a new --run_dir ({str(err).splitlines()[0][:200]})"
            ) from err
        found = None if state.input_norm is None else state.input_norm.numpy().decode()
        if found != expected:
            raise UserError(
                f"{path} was trained on inputs normalised as {found!r} but this run "
                f"normalises as {expected!r}; pass --input_norm={found} or a new --output_dir"
            )
        log(f"resuming from {path} (epoch {int(state.epoch)} done)")
        return int(state.epoch)
    if candidates:
        raise UserError(
            f"{folder}: none of its checkpoints can be read ({', '.join(candidates)});"
            " move the checkpoints folder away to start the run again"
        )
    return 0
