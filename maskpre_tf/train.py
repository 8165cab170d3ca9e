"""Train MaskPre: ``python -m maskpre_tf.train --flagfile=configs/market.flags``.

Reads a dataset (no identity labels used), builds the online encoder, EMA teacher and heads
under the chosen ``tf.distribute`` strategy, and runs the epochs: cluster teacher features into
pseudo identities, train with two DropBlock views per image, evaluate, checkpoint. Re-running the
same command resumes from the last checkpoint in ``--output_dir``. The final (or, with
``--keep_best``, the best-on-validation) teacher weights are written to
``<output_dir>/teacher.weights.h5`` for ``maskpre_tf.evaluate`` and ``maskpre_tf.export``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from maskpre_tf.config import TrainConfig, config_from_flags, define_flags
from maskpre_tf.data import datasets
from maskpre_tf.data.pipeline import (
    PKSampler,
    make_eval_dataset,
    make_train_dataset,
    validate_images,
)
from maskpre_tf.errors import UserError, run_main
from maskpre_tf.evaluation.extract import evaluate_model
from maskpre_tf.models.maskpre import build_maskpre, make_optimizer
from maskpre_tf.models.supervised import SupervisedReid
from maskpre_tf.training import callbacks as cb
from maskpre_tf.training.loop import Trainer, make_strategy, worker_info

TEACHER_WEIGHTS = "teacher.weights.h5"
SOURCE_WEIGHTS = "source_pretrained.weights.h5"
SOURCE_SEED_OFFSET = 1000
CONFIG_FILE = "config.json"


def log(message: str) -> None:
    """Print one progress line, flushed (the run is often watched through a pipe)."""
    print(message, flush=True)


def load_data(cfg: TrainConfig) -> datasets.ReidDataset:
    """The dataset of ``cfg`` (generating the demo set first if asked), corrupt images dropped."""
    if cfg.generate_demo:
        from maskpre_tf.data.synth import DEMO_SEED, ensure_demo_data

        ensure_demo_data(cfg.data_dir)
        if cfg.source_dir:  # a second generated domain: other people, other cameras
            ensure_demo_data(cfg.source_dir, seed=DEMO_SEED + SOURCE_SEED_OFFSET)
    options = {}
    if cfg.dataset == "folder":
        options = {"cam_pattern": cfg.cam_pattern, "manifest": cfg.manifest or None,
                   "query_dir": cfg.query_dir or None, "gallery_dir": cfg.gallery_dir or None}
    data = datasets.load_dataset(cfg.dataset, cfg.data_dir, **options)
    bad = set(validate_images([r.path for r in data.train]))
    if bad:
        log(f"skipping {len(bad)} unreadable training images, e.g. {sorted(bad)[0]}")
        data.train = [r for r in data.train if r.path not in bad]
    bad_eval = validate_images([r.path for r in data.query + data.gallery])
    if bad_eval:
        raise UserError(f"{len(bad_eval)} query/gallery images are unreadable, e.g. "
                        f"{bad_eval[0]}; evaluation needs every one (re-copy or remove them)")
    if len(data.train) < cfg.batch_size:
        raise UserError(f"{cfg.data_dir}: {len(data.train)} training images, fewer than one "
                        f"batch (--batch_size={cfg.batch_size})")
    return data


def pretrain_on_source(cfg: TrainConfig, model, strategy: tf.distribute.Strategy,
                       is_chief: bool) -> None:
    """Supervised pre-training of ``model.student`` on the labelled source domain.

    The result is saved to ``<output_dir>/source_pretrained.weights.h5`` and reused when the
    run restarts before its first MaskPre checkpoint; the teacher starts as a copy.
    """
    path = os.path.join(cfg.output_dir, SOURCE_WEIGHTS)
    if os.path.exists(path):
        model.student.load_weights(path)
        model.copy_student_to_teacher()
        log(f"source pre-training: reusing {path}")
        return
    source = datasets.load_dataset(cfg.source_dataset, cfg.source_dir)
    source.train = [r for r in source.train if r.path not in set(
        validate_images([r.path for r in source.train]))]
    _, labels = np.unique([r.pid for r in source.train], return_inverse=True)
    with strategy.scope():
        supervised = SupervisedReid(model.student, int(labels.max()) + 1, cfg.batch_size,
                                    weight_decay=cfg.weight_decay)
        supervised.build_all((cfg.height, cfg.width, 3))
        supervised.compile(optimizer=make_optimizer(cfg, epochs=cfg.source_epochs))
        supervised.optimizer.build(supervised.trainable_variables)
    sampler = PKSampler(labels, np.array([r.camid for r in source.train]), cfg.batch_size,
                        cfg.num_instances, seed=cfg.seed)
    epoch_now = {"epoch": 0}
    dataset = make_train_dataset([r.path for r in source.train], sampler,
                                 lambda: epoch_now["epoch"], cfg.iters, cfg.height, cfg.width,
                                 cfg.batch_size, cfg.seed, pad=cfg.pad,
                                 erase_prob=cfg.erase_prob)
    state = cb.RunState(pseudo_labels=tf.Variable([0], dtype=tf.int64),
                        epoch=tf.Variable(0, dtype=tf.int64))
    progress = cb.ProgressCallback(state, cfg.batch_size, cfg.iters,
                                   os.path.join(cfg.output_dir, "summary_source.json"),
                                   log=log, prefix="source ")
    Trainer(supervised, strategy, dataset, cfg.iters,
            [_EpochTracker(epoch_now), progress]).fit(0, cfg.source_epochs)
    if is_chief:
        _atomic_save_weights(model.student, path)
    model.copy_student_to_teacher()


def write_config(cfg: TrainConfig, output_dir: str) -> None:
    """Record the run's configuration; warn when resuming under a different one."""
    path = os.path.join(output_dir, CONFIG_FILE)
    record = {"digest": cfg.digest(), "config": dataclasses.asdict(cfg)}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("digest") != record["digest"]:
            changed = sorted(k for k, v in record["config"].items()
                             if old.get("config", {}).get(k) != v)
            log(f"note: resuming {output_dir} with changed settings: {', '.join(changed)}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a whole training; returns the summary dict."""
    start = time.perf_counter()
    strategy = make_strategy(cfg.strategy)  # first: multi-worker set-up precedes other TF work
    worker = worker_info(strategy)
    is_chief = worker.is_chief
    data = load_data(cfg)
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_global_policy(cfg.precision)
    os.makedirs(cfg.output_dir, exist_ok=True)
    # Only the chief writes the run's files; other workers write to a scratch folder.
    own_dir = cfg.output_dir if is_chief else os.path.join(cfg.output_dir,
                                                            f"worker_{worker.index}")
    os.makedirs(own_dir, exist_ok=True)
    if is_chief:
        write_config(cfg, cfg.output_dir)
    with strategy.scope():
        model = build_maskpre(cfg, len(data.train), strategy.num_replicas_in_sync)
    state = cb.RunState(
        pseudo_labels=tf.Variable(np.full(len(data.train), -1, np.int64), trainable=False),
        epoch=tf.Variable(0, dtype=tf.int64, trainable=False))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                     pseudo_labels=state.pseudo_labels, epoch=state.epoch)
    # Every worker saves (saving may run collectives) but only the chief's copy is the run's;
    # every worker resumes from the chief's latest checkpoint.
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(own_dir, "checkpoints"),
                                         max_to_keep=3)
    latest = tf.train.latest_checkpoint(os.path.join(cfg.output_dir, "checkpoints"))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        log(f"resuming from {latest} (epoch {int(state.epoch)} done)")
    initial_epoch = int(state.epoch)
    embed = tf.function(lambda x: model.teacher(x, training=False), reduce_retracing=True)
    before = {}
    evaluate_here = bool(data.query) and is_chief
    if initial_epoch == 0 and cfg.source_dataset:
        if evaluate_here:
            init = evaluate_model(embed, data.query, data.gallery, cfg.height, cfg.width)
            log(f"initial weights: mAP {init['mAP']:.1%}, Rank-1 {init['rank1']:.1%}")
            before["initial"] = init
        pretrain_on_source(cfg, model, strategy, is_chief)

    # Placeholder labels (one cluster per image); every epoch's clustering replaces them.
    camids = np.array([r.camid for r in data.train])
    sampler = PKSampler(np.arange(len(data.train)), camids, batch_size=cfg.batch_size,
                        num_instances=cfg.num_instances, seed=cfg.seed)
    epoch_now = {"epoch": initial_epoch}
    paths = [r.path for r in data.train]
    dataset = make_train_dataset(paths, sampler, lambda: epoch_now["epoch"], cfg.iters,
                                 cfg.height, cfg.width, cfg.batch_size, cfg.seed, pad=cfg.pad,
                                 erase_prob=cfg.erase_prob)

    if initial_epoch == 0 and evaluate_here:
        before.update(evaluate_model(embed, data.query, data.gallery, cfg.height, cfg.width))
        log(f"before MaskPre: mAP {before['mAP']:.1%}, Rank-1 {before['rank1']:.1%}")
    val = None
    if cfg.keep_best:
        val_data = datasets.load_dataset("auto", cfg.val_dir)
        val = (val_data.query, val_data.gallery)
    best_path = os.path.join(cfg.output_dir, "best_" + TEACHER_WEIGHTS)
    sample = next(iter(make_eval_dataset(paths[:4], cfg.height, cfg.width, 4))).numpy()
    progress = cb.ProgressCallback(state, cfg.batch_size, cfg.iters,
                                   os.path.join(own_dir, "summary_epochs.json"), log=log)
    callbacks = [
        _EpochTracker(epoch_now),
        cb.ClusteringCallback(state, data.train, sampler, cfg, embed, log=log),
        cb.EvaluationCallback(state, data.query if is_chief else [], data.gallery, cfg, embed,
                              cfg.eval_every, cfg.epochs, val=val if is_chief else None,
                              best_path=best_path, log=log),
        cb.CheckpointCallback(state, manager),
        progress,
    ]
    if is_chief:
        callbacks.append(cb.TensorBoardCallback(state, os.path.join(cfg.output_dir, "logs"),
                                                sample_images=sample))
    trainer = Trainer(model, strategy, dataset, cfg.iters, callbacks)
    trainer.fit(initial_epoch, cfg.epochs)

    final_path = os.path.join(cfg.output_dir, TEACHER_WEIGHTS)
    if is_chief:
        if cfg.keep_best and os.path.exists(best_path):
            model.teacher.load_weights(best_path)
        _atomic_save_weights(model.teacher, final_path)
    after = {}
    if evaluate_here:  # the last epoch's evaluation holds unless another model was kept
        fresh = cfg.keep_best or "mAP" not in state.eval_results
        after = evaluate_model(embed, data.query, data.gallery, cfg.height, cfg.width) \
            if fresh else {k: state.eval_results[k] for k in ("mAP", "rank1", "rank5", "rank10")}
    summary = {"before": before, "after": after, "epochs": cfg.epochs,
               "seconds": time.perf_counter() - start, "teacher_weights": final_path,
               "config_digest": cfg.digest()}
    if after:
        log(f"after training: mAP {after['mAP']:.1%}, Rank-1 {after['rank1']:.1%}, "
            f"Rank-5 {after['rank5']:.1%}, Rank-10 {after['rank10']:.1%}")
    if is_chief:
        log(f"done in {summary['seconds']:.0f} s; teacher weights in {final_path}")
        with open(os.path.join(cfg.output_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


class _EpochTracker(keras.callbacks.Callback):
    """Publishes the current epoch to the input pipeline (augmentation and sampling seeds)."""

    def __init__(self, holder: dict):
        super().__init__()
        self.holder = holder

    def on_epoch_begin(self, epoch, logs=None):
        self.holder["epoch"] = epoch


def _atomic_save_weights(model: keras.Model, path: str) -> None:
    tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def main(argv: list[str]) -> None:
    del argv
    train(config_from_flags(flags.FLAGS))


define_flags()
flags.DEFINE_bool("debug", False, "show the traceback of user errors")

if __name__ == "__main__":
    app.run(lambda argv: run_main(main, argv, debug=flags.FLAGS.debug))
