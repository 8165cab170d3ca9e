"""Keras callbacks of a run's epoch end: evaluation, epoch counter, checkpoint, progress.

With the clustering callback (:mod:`.clustering_callback`) and TensorBoard (:mod:`.tensorboard`)
they share one :class:`~maskpre_tf.training.state.RunState`, so each callback does one job and
the order of the list decides the order of work at each hook (see :mod:`.loop`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.data.datasets import Record
from maskpre_tf.evaluation.extract import evaluate_features, evaluate_model, extract_features
from maskpre_tf.training.projector import write_eval_projector
from maskpre_tf.training.state import RunState


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluates the deployed encoder on query/gallery every ``every`` epochs and at the last.

    ``embed`` is the deployed encoder's embed function and ``deployed`` the encoder itself
    (teacher or student, ``--deploy_network``); its figures are the run's (``mAP`` etc.). At
    the last epoch, with ``projector_dir`` (the run's TensorBoard folder), the query/gallery
    embeddings also go to TensorBoard's embedding projector, with the crops as sprites. With
    ``other`` = (name, embed function) the encoder not deployed is evaluated beside it and
    logged as ``<name>_mAP`` etc. With ``val`` (a labelled validation split) it also tracks the
    best epoch by validation mAP and saves the deployed encoder's weights to ``best_path``; the
    test split never selects a model.
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
        deployed: keras.Model | None = None,
        other: tuple[str, Callable] | None = None,
        projector_dir: str = "",
    ):
        super().__init__()
        self.state = state
        self.query, self.gallery = query, gallery
        self.cfg = cfg
        self.embed = embed
        self.deployed = deployed
        self.other = other
        self.projector_dir = projector_dir
        self.every = every
        self.last_epoch = last_epoch
        self.val = val
        self.best_path = best_path
        self.log = log

    def on_epoch_begin(self, epoch, logs=None):
        self.state.eval_results = {}  # an epoch without evaluation reports none

    def on_epoch_end(self, epoch, logs=None):
        height, width = self.cfg.data.height, self.cfg.data.width
        due = epoch + 1 == self.last_epoch or (self.every > 0 and (epoch + 1) % self.every == 0)
        start = time.perf_counter()
        if self.query and due:
            qf = extract_features(self.embed, [r.path for r in self.query], height, width)
            gf = extract_features(self.embed, [r.path for r in self.gallery], height, width)
            res = evaluate_features(qf, gf, self.query, self.gallery)
            self.state.eval_results = res
            if self.projector_dir and epoch + 1 == self.last_epoch:
                files = write_eval_projector(self.projector_dir, qf, gf, self.query, self.gallery)
                self.log(
                    f"epoch {epoch + 1}: embedding projector of {len(files.indices)} "
                    f"query/gallery crops in {self.projector_dir} (TensorBoard, Projector)"
                )
            self.log(
                f"epoch {epoch + 1}: mAP {res['mAP']:.1%}, Rank-1 {res['rank1']:.1%}, "
                f"Rank-5 {res['rank5']:.1%}, Rank-10 {res['rank10']:.1%}"
            )
            if self.other is not None:
                name, embed = self.other
                res = evaluate_model(embed, self.query, self.gallery, height, width)
                self.state.eval_results.update({f"{name}_{k}": v for k, v in res.items()})
                self.log(
                    f"epoch {epoch + 1}: {name} mAP {res['mAP']:.1%}, Rank-1 {res['rank1']:.1%}"
                )
        if self.val is not None:
            val = evaluate_model(self.embed, *self.val, height, width)
            self.state.eval_results = {**self.state.eval_results, "val_mAP": val["mAP"]}
            if val["mAP"] > float(self.state.best_map):
                self.state.best_map.assign(val["mAP"])
                runs.atomic_save_weights(self.deployed, self.best_path)
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

    Put it last in the callback list: the checkpoint is what marks an epoch as done, so every
    other file the epoch writes (summaries, TensorBoard) must already be written.

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
            self.log(
                f"{self.prefix}epoch {self.epoch + 1}: step {done}/{self.steps}, loss "
                f"{loss:.3f}, {rate:.1f} img/s, ETA {eta:.0f} s"
            )

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
