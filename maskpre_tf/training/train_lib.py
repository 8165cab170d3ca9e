"""A whole training run: data, model, optional source pre-training, the MaskPre epochs, outputs.

:func:`train` is what ``python -m maskpre_tf.train`` runs. It reads a dataset (no identity
labels used), builds the online encoder, EMA teacher and heads under the chosen
``tf.distribute`` strategy, and runs the epochs: cluster teacher features into pseudo
identities, train with two DropBlock views per image, evaluate, checkpoint. Re-running the same
command resumes from the last checkpoint in ``--output_dir`` (see :mod:`maskpre_tf.runs` for
the files). The final (or, with ``--keep_best``, the best-on-validation) weights of the deployed
encoder (``--deploy_network``: teacher or student) go to ``<output_dir>/encoder.weights.h5``.
"""

from __future__ import annotations

import functools
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.data import datasets
from maskpre_tf.data.images import image_file_problem, validate_images
from maskpre_tf.data.pipeline import make_eval_dataset, make_train_dataset
from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.extract import evaluate_model
from maskpre_tf.models.folding import FoldedEncoder
from maskpre_tf.models.maskpre import build_maskpre
from maskpre_tf.models.optimizer import make_optimizer
from maskpre_tf.models.supervised import SupervisedReid
from maskpre_tf.training import callbacks as cb
from maskpre_tf.training.clustering_callback import ClusteringCallback
from maskpre_tf.training.loop import Trainer, make_strategy, worker_info
from maskpre_tf.training.state import RunState
from maskpre_tf.training.tensorboard import TensorBoardCallback

SOURCE_SEED_OFFSET = 1000


def log(message: str) -> None:
    """Print one progress line, flushed (the run is often watched through a pipe)."""
    print(message, flush=True)


def load_data(cfg: TrainConfig) -> datasets.ReidDataset:
    """The dataset of ``cfg`` (generating the demo set first if asked), corrupt images dropped."""
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
            f"one batch (--batch_size={cfg.optim.batch_size})"
        )
    return data


def pretrain_on_source(
    cfg: TrainConfig, model, strategy: tf.distribute.Strategy, is_chief: bool, own_dir: str
) -> None:
    """Supervised pre-training of ``model.student`` on the labelled source domain.

    Every source epoch ends in a checkpoint (``<own_dir>/source_checkpoints``: the supervised
    model, its optimizer and the epoch), so a killed run resumes its source phase at the epoch it
    reached. The result is saved to ``<output_dir>/source_pretrained.weights.h5`` (then the
    source checkpoints are removed) and reused when the run restarts before its first MaskPre
    checkpoint; the teacher starts as a copy.
    """
    path = os.path.join(cfg.run.output_dir, runs.SOURCE_WEIGHTS)
    if os.path.exists(path):
        model.student.load_weights(path)
        model.copy_student_to_teacher()
        log(f"source pre-training: reusing {path}")
        return
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
    sampler = PKSampler(
        labels,
        np.array([r.camid for r in source.train]),
        optim.batch_size,
        optim.num_instances,
        seed=cfg.run.seed,
    )
    state = RunState(
        pseudo_labels=tf.Variable([0], dtype=tf.int64), epoch=tf.Variable(0, dtype=tf.int64)
    )
    stream = functools.partial(
        make_train_dataset,
        [r.path for r in source.train],
        sampler,
        lambda: int(state.epoch),
        optim.iters,
        data_cfg.height,
        data_cfg.width,
        optim.batch_size,
        cfg.run.seed,
        pad=data_cfg.pad,
        erase_prob=data_cfg.erase_prob,
    )
    progress = cb.ProgressCallback(
        state,
        optim.batch_size,
        optim.iters,
        os.path.join(cfg.run.output_dir, runs.SUMMARY_SOURCE),
        log=log,
        prefix="source ",
    )
    checkpoint = tf.train.Checkpoint(
        model=supervised, optimizer=supervised.optimizer, epoch=state.epoch
    )
    folder = os.path.join(own_dir, runs.SOURCE_CHECKPOINTS)
    manager = tf.train.CheckpointManager(checkpoint, folder, max_to_keep=2)
    done = restore_or_start(checkpoint, folder, state)
    if done:
        log(f"source pre-training: resuming after epoch {done} of {epochs}")
    callbacks = [cb.EpochCounter(state), progress, cb.CheckpointCallback(manager)]
    # Each input pipeline (worker) decodes only its own share of every batch.
    dataset = lambda ctx: stream(input_context=ctx)  # noqa: E731
    Trainer(supervised, strategy, dataset, optim.iters, callbacks).fit(done, epochs)
    if is_chief:
        runs.atomic_save_weights(model.student, path)
    shutil.rmtree(folder, ignore_errors=True)  # the weights file now holds the phase
    model.copy_student_to_teacher()


def restore_or_start(
    checkpoint: tf.train.Checkpoint,
    folder: str,
    state: RunState,
    input_norm: tf.Variable | None = None,
) -> int:
    """Restore the newest readable checkpoint in ``folder``, if any; returns the epochs done.

    A checkpoint whose files are damaged (a truncated copy, a full disk at write time) is
    passed over, with a message, for the previous one the manager kept. ``input_norm`` (the
    checkpointed normalisation of the run's inputs) must equal the value it holds now.

    Raises:
      UserError: the checkpoints were written by another model or input normalisation, or
        none of them can be read.
    """
    expected = None if input_norm is None else input_norm.numpy().decode()
    candidates = runs.checkpoints_newest_first(folder)
    for path in candidates:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError, OSError) as err:  # damaged files
            log(f"note: {path} is unreadable ({type(err).__name__}); trying the one before it")
            continue
        except (AssertionError, ValueError) as err:
            raise UserError(
                f"{path} does not fit the model these settings build (another backbone, memory "
                "or head than the run was trained with?); resume with the run's own settings "
                f"(its config.json) or pass a new --output_dir ({str(err).splitlines()[0][:200]})"
            ) from err
        found = expected if input_norm is None else input_norm.numpy().decode()
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


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a whole training; returns the summary dict."""
    start = time.perf_counter()
    run_cfg, data_cfg, optim = cfg.run, cfg.data, cfg.optim
    out_dir = run_cfg.output_dir
    strategy = make_strategy(run_cfg.strategy)  # first: multi-worker set-up precedes other TF
    worker = worker_info(strategy)
    is_chief = worker.is_chief
    data = load_data(cfg)
    keras.utils.set_random_seed(run_cfg.seed)
    keras.mixed_precision.set_global_policy(optim.precision)
    runs.prepare_output_dir(out_dir)
    # Only the chief writes the run's files; other workers write to a scratch folder.
    own_dir = out_dir if is_chief else os.path.join(out_dir, f"worker_{worker.index}")
    os.makedirs(own_dir, exist_ok=True)
    if is_chief:
        runs.write_config(cfg, out_dir, log=log)
    with strategy.scope():
        model = build_maskpre(cfg, len(data.train), strategy.num_replicas_in_sync)
    state = RunState(
        pseudo_labels=tf.Variable(np.full(len(data.train), -1, np.int64), trainable=False),
        epoch=tf.Variable(0, dtype=tf.int64, trainable=False),
        best_map=tf.Variable(-1.0, dtype=tf.float64, trainable=False),
    )
    input_norm = tf.Variable(cfg.model.input_norm, trainable=False)
    checkpoint = tf.train.Checkpoint(
        model=model,
        optimizer=model.optimizer,
        pseudo_labels=state.pseudo_labels,
        epoch=state.epoch,
        best_map=state.best_map,
        input_norm=input_norm,
    )
    # Every worker saves (saving may run collectives) but only the chief's copy is the run's;
    # every worker resumes from the chief's latest checkpoint.
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(own_dir, runs.CHECKPOINTS), max_to_keep=3
    )
    initial_epoch = restore_or_start(
        checkpoint, os.path.join(out_dir, runs.CHECKPOINTS), state, input_norm
    )
    summary_path = os.path.join(out_dir, runs.SUMMARY)
    earlier = runs.read_json(summary_path) if initial_epoch else {}
    if initial_epoch >= optim.epochs and earlier.get("after") is not None:
        log(
            f"{out_dir}: all {optim.epochs} epochs are done (summary.json); nothing to train. "
            "Raise --epochs to train on, or pass a new --output_dir"
        )
        return earlier
    # Feature extraction (clustering, evaluation) runs each network with its BatchNorms folded
    # into its convolutions, re-folded after every training step that changed the weights, and
    # splits each batch over the worker's devices.
    networks = {"teacher": model.teacher, "student": model.student}
    steps = lambda: int(model.optimizer.iterations.numpy())  # noqa: E731
    embeds = {name: FoldedEncoder(net, steps, strategy) for name, net in networks.items()}
    deployed = networks[run_cfg.deploy_network]
    embed = embeds[run_cfg.deploy_network]
    (other,) = set(networks) - {run_cfg.deploy_network}
    height, width = data_cfg.height, data_cfg.width
    before = earlier.get("before", {})
    evaluate_here = bool(data.query) and is_chief
    if initial_epoch == 0 and cfg.source.source_dataset:
        if evaluate_here:
            init = evaluate_model(embed, data.query, data.gallery, height, width)
            log(f"initial weights: mAP {init['mAP']:.1%}, Rank-1 {init['rank1']:.1%}")
            before["initial"] = init
        pretrain_on_source(cfg, model, strategy, is_chief, own_dir)
        for folded in embeds.values():  # trained with the source model's own steps
            folded.refresh(force=True)

    # Placeholder labels (one cluster per image); every epoch's clustering replaces them.
    camids = np.array([r.camid for r in data.train])
    sampler = PKSampler(
        np.arange(len(data.train)),
        camids,
        batch_size=optim.batch_size,
        num_instances=optim.num_instances,
        seed=run_cfg.seed,
    )
    paths = [r.path for r in data.train]
    stream = functools.partial(
        make_train_dataset,
        paths,
        sampler,
        lambda: int(state.epoch),
        optim.iters,
        height,
        width,
        optim.batch_size,
        run_cfg.seed,
        pad=data_cfg.pad,
        erase_prob=data_cfg.erase_prob,
    )

    if initial_epoch == 0 and evaluate_here:
        before.update(evaluate_model(embed, data.query, data.gallery, height, width))
        log(f"before MaskPre: mAP {before['mAP']:.1%}, Rank-1 {before['rank1']:.1%}")
    prior_seconds = earlier.get("seconds", 0.0)
    if is_chief:  # what is known so far survives a kill: the figures before training
        runs.atomic_write_json(
            summary_path,
            {
                "before": before,
                "after": None,
                "seconds": prior_seconds + time.perf_counter() - start,
                "config_digest": cfg.digest(),
            },
        )
    val = None
    if run_cfg.keep_best:
        val_data = datasets.load_dataset("auto", run_cfg.val_dir)
        val = (val_data.query, val_data.gallery)
    best_path = os.path.join(out_dir, runs.BEST_WEIGHTS)
    sample = next(iter(make_eval_dataset(paths[:4], height, width, 4))).numpy()
    progress = cb.ProgressCallback(
        state, optim.batch_size, optim.iters, os.path.join(own_dir, runs.SUMMARY_EPOCHS), log=log
    )
    callbacks = [
        ClusteringCallback(
            state, data.train, sampler, cfg, embeds[cfg.clustering.cluster_network], log=log
        ),
        cb.EvaluationCallback(
            state,
            data.query if is_chief else [],
            data.gallery,
            cfg,
            embed,
            run_cfg.eval_every,
            optim.epochs,
            val=val if is_chief else None,
            best_path=best_path,
            log=log,
            deployed=deployed,
            other=(other, embeds[other]) if run_cfg.eval_other else None,
            projector_dir=os.path.join(out_dir, runs.LOGS) if is_chief else "",
        ),
        cb.EpochCounter(state),
        progress,
    ]
    if is_chief:
        callbacks.append(
            TensorBoardCallback(state, os.path.join(out_dir, runs.LOGS), sample_images=sample)
        )
    callbacks.append(cb.CheckpointCallback(manager))  # last: it commits the epoch
    # Each input pipeline (worker) decodes only its own share of every batch.
    dataset = lambda ctx: stream(input_context=ctx)  # noqa: E731
    trainer = Trainer(model, strategy, dataset, optim.iters, callbacks, run_cfg.steps_per_loop)
    try:
        trainer.fit(initial_epoch, optim.epochs)
    except tf.errors.NotFoundError as err:  # a training image removed while the run reads them
        raise UserError(
            f"a file the run reads has gone ({err.message.splitlines()[0][-300:]}); restore "
            "it and re-run the same command: the run resumes from its last checkpoint "
            f"({runs.latest_checkpoint(out_dir) or 'none yet'})"
        ) from err

    final_path = os.path.join(out_dir, runs.ENCODER_WEIGHTS)
    if is_chief:
        if run_cfg.keep_best and os.path.exists(best_path):
            deployed.load_weights(best_path)
        runs.atomic_save_weights(deployed, final_path)
    after = {}
    if evaluate_here:  # the last epoch's evaluation holds unless another model was kept
        fresh = run_cfg.keep_best or "mAP" not in state.eval_results
        after = (
            evaluate_model(embed, data.query, data.gallery, height, width)
            if fresh
            else {k: state.eval_results[k] for k in ("mAP", "rank1", "rank5", "rank10")}
        )
    summary = {
        "before": before,
        "after": after,
        "epochs": optim.epochs,
        "seconds": prior_seconds + time.perf_counter() - start,
        "deployed": run_cfg.deploy_network,
        "encoder_weights": final_path,
        "config_digest": cfg.digest(),
    }
    if after:
        log(
            f"after training: mAP {after['mAP']:.1%}, Rank-1 {after['rank1']:.1%}, "
            f"Rank-5 {after['rank5']:.1%}, Rank-10 {after['rank10']:.1%}"
        )
    if is_chief:
        log(f"done in {summary['seconds']:.0f} s; {run_cfg.deploy_network} weights in {final_path}")
        runs.atomic_write_json(summary_path, summary)
    return summary
