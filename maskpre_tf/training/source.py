"""A run's data, and the supervised source phase of domain adaptation.

:func:`load_data` reads the unlabelled training set (generating the demo set first if asked)
and drops unreadable training images. :func:`pretrain_on_source` trains the student with labels
on another domain first (:class:`~maskpre_tf.models.supervised.SupervisedReid`), as a
:class:`~.phase.Phase` of its own: resumable epoch by epoch, its result kept as a weights file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.data import datasets
from maskpre_tf.data.images import image_file_problem, validate_images
from maskpre_tf.data.pipeline import TrainStream
from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError
from maskpre_tf.models.maskpre import MaskPre
from maskpre_tf.models.optimizer import make_optimizer
from maskpre_tf.models.supervised import SupervisedReid
from maskpre_tf.training.phase import Phase
from maskpre_tf.training.progress import ProgressCallback
from maskpre_tf.training.state import RunState

SOURCE_SEED_OFFSET = 1000


def load_data(cfg: TrainConfig, log: Callable[[str], None] = print) -> datasets.ReidDataset:
    """The dataset of ``cfg`` (generating the demo set first if asked), corrupt images dropped.

    Raises:
      UserError: a query/gallery image is unreadable, or fewer training images than a batch.
    """
    data_cfg, source = cfg.data, cfg.source
    if data_cfg.generate_demo:
        from maskpre_tf.data.synth import DEMO_SEED, ensure_demo_data

        ensure_demo_data(data_cfg.data_dir)
        if source.source_dir:  # a second generated domain: other people, other cameras
            ensure_demo_data(source.source_dir, seed=DEMO_SEED + SOURCE_SEED_OFFSET)
    options = {}
    if data_cfg.dataset == "folder":
        options = {
            "cam_pattern": data_cfg.cam_pattern,
            "manifest": data_cfg.manifest or None,
            "query_dir": data_cfg.query_dir or None,
            "gallery_dir": data_cfg.gallery_dir or None,
        }
    data = datasets.load_dataset(data_cfg.dataset, data_cfg.data_dir, **options)
    bad = set(validate_images([r.path for r in data.train]))
    if bad:
        first = sorted(bad)[0]
        log(
            f"skipping {len(bad)} unreadable training images, e.g. {first} "
            f"({image_file_problem(first)})"
        )
        data.train = [r for r in data.train if r.path not in bad]
    bad_eval = validate_images([r.path for r in data.query + data.gallery])
    if bad_eval:
        raise UserError(
            f"{len(bad_eval)} query/gallery images are unreadable, e.g. {bad_eval[0]} "
            f"({image_file_problem(bad_eval[0])}); evaluation needs every one (re-copy or "
            "remove them)"
        )
    if len(data.train) < cfg.optim.batch_size:
        raise UserError(
            f"{data_cfg.data_dir}: {len(data.train)} training images, fewer than "
            f"one batch (--batch_size={cfg.optim.batch_size}); add images (clustering needs "
            "several per person) or lower --batch_size (a multiple of --num_instances)"
        )
    return data


def source_phase(
    cfg: TrainConfig, model: MaskPre, strategy: tf.distribute.Strategy, own_dir: str, log
) -> Phase:
    """The supervised phase of ``model.student`` on the labelled source domain."""
    optim, data_cfg = cfg.optim, cfg.data
    source = datasets.load_dataset(cfg.source.source_dataset, cfg.source.source_dir)
    bad = set(validate_images([r.path for r in source.train]))
    source.train = [r for r in source.train if r.path not in bad]
    _, labels = np.unique([r.pid for r in source.train], return_inverse=True)
    epochs = cfg.source.source_epochs
    with strategy.scope():
        supervised = SupervisedReid(
            model.student, int(labels.max()) + 1, optim.batch_size, weight_decay=optim.weight_decay
        )
        supervised.build_all((data_cfg.height, data_cfg.width, 3))
        supervised.compile(optimizer=make_optimizer(optim, epochs=epochs))
        supervised.optimizer.build(supervised.trainable_variables)
    camids = np.array([r.camid for r in source.train])
    sampler = PKSampler(labels, camids, optim.batch_size, optim.num_instances, seed=cfg.run.seed)
    state = RunState.create(labels)
    stream = TrainStream(
        [r.path for r in source.train],
        state.labels.numpy,
        lambda: int(state.epoch),
        sampler,
        optim.iters,
        data_cfg.height,
        data_cfg.width,
        seed=cfg.run.seed,
        pad=data_cfg.pad,
        erase_prob=data_cfg.erase_prob,
    )
    summary = os.path.join(cfg.run.run_dir, runs.SUMMARY_SOURCE)
    progress = ProgressCallback(optim.batch_size, optim.iters, summary, log, prefix="source ")
    folder = os.path.join(own_dir, runs.SOURCE_CHECKPOINTS)
    return Phase(
        supervised,
        strategy,
        stream,
        state,
        epochs,
        checkpoints=folder,
        resume_from=folder,
        with_labels=False,
        observers=[progress],
        log=log,
    )


def pretrain_on_source(
    cfg: TrainConfig,
    model: MaskPre,
    strategy: tf.distribute.Strategy,
    is_chief: bool,
    own_dir: str,
    log: Callable[[str], None] = print,
) -> None:
    """Supervised pre-training of ``model.student`` on the labelled source domain.

    Every source epoch ends in a checkpoint (``<own_dir>/source_checkpoints``: the supervised
    model, its optimizer and the epoch), so a killed run resumes its source phase at the epoch it
    reached. The result is saved to ``<run_dir>/source_pretrained.weights.h5`` (then the
    source checkpoints are removed) and reused when the run restarts before its first MaskPre
    checkpoint; the teacher starts as a copy.
    """
    path = os.path.join(cfg.run.run_dir, runs.SOURCE_WEIGHTS)
    if os.path.exists(path):
        model.student.load_weights(path)
        model.copy_student_to_teacher()
        log(f"source pre-training: reusing {path}")
        return
    phase = source_phase(cfg, model, strategy, own_dir, log)
    done = phase.resume()
    if done:
        log(f"source pre-training: resuming after epoch {done} of {phase.epochs}")
    phase.run(done)
    if is_chief:
        runs.atomic_save_weights(model.student, path)
    shutil.rmtree(phase.checkpoints, ignore_errors=True)  # the weights file now holds the phase
    model.copy_student_to_teacher()
