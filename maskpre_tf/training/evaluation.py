"""The evaluation stage: query/gallery mAP of the deployed encoder, best-on-validation weights."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras

from maskpre_tf import runs
from maskpre_tf.data.datasets import Record
from maskpre_tf.evaluation.extract import evaluate_features, evaluate_model, extract_features
from maskpre_tf.training.projector import write_eval_projector
from maskpre_tf.training.state import RunState


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluates the deployed encoder on query/gallery every ``every`` epochs and at the last.

    ``embed`` is the deployed encoder's embed function and ``deployed`` the encoder itself
    (teacher or student, ``--deploy_network``); its figures are the run's (``mAP`` etc., added
    to the epoch's logs). At the last epoch, with ``projector_dir`` (the run's TensorBoard
    folder), the query/gallery
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
        size: tuple[int, int],
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
        self.size = size
        self.embed = embed
        self.deployed = deployed
        self.other = other
        self.projector_dir = projector_dir
        self.every = every
        self.last_epoch = last_epoch
        self.val = val
        self.best_path = best_path
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        """Evaluate when due; the figures go into ``logs`` (an epoch without one adds none)."""
        logs = {} if logs is None else logs
        height, width = self.size
        due = epoch + 1 == self.last_epoch or (self.every > 0 and (epoch + 1) % self.every == 0)
        start = time.perf_counter()
        if self.query and due:
            qf = extract_features(self.embed, [r.path for r in self.query], height, width)
            gf = extract_features(self.embed, [r.path for r in self.gallery], height, width)
            res = evaluate_features(qf, gf, self.query, self.gallery)
            logs.update(res)
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
                logs.update({f"{name}_{k}": v for k, v in res.items()})
                self.log(
                    f"epoch {epoch + 1}: {name} mAP {res['mAP']:.1%}, Rank-1 {res['rank1']:.1%}"
                )
        if self.val is not None:
            val = evaluate_model(self.embed, *self.val, height, width)
            logs["val_mAP"] = val["mAP"]
            if val["mAP"] > float(self.state.best_map):
                self.state.best_map.assign(val["mAP"])
                runs.atomic_save_weights(self.deployed, self.best_path)
                self.log(f"epoch {epoch + 1}: best validation mAP so far {val['mAP']:.1%}")
        logs["eval_seconds"] = time.perf_counter() - start
