"""A whole training run: where, data, model, resume or start, the MaskPre epochs, outputs.

:func:`train` is what ``python -m maskpre_tf.train`` runs; it reads as a run goes:

1. where: the ``tf.distribute`` strategy, this worker's place, the output folder;
2. data: the unlabelled training set (no identity label is used) and query/gallery;
3. model: the online encoder (student), the EMA teacher, the heads and memories;
4. resume from the newest checkpoint, or evaluate the start (and, for domain adaptation,
   pre-train on the labelled source: :mod:`.source`);
5. the MaskPre epochs (:class:`~.phase.Phase`, each epoch as :mod:`.epoch` lists it);
6. outputs: the deployed encoder's weights (``--deploy_network``; with ``--keep_best`` the
   best on validation) in ``<run_dir>/encoder.weights.h5``, its figures, the summary.

Re-running the same command resumes (see :mod:`maskpre_tf.runs` for the files).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from maskpre_tf import runs
from maskpre_tf.config import TrainConfig
from maskpre_tf.data import datasets
from maskpre_tf.data.pipeline import TrainStream, make_eval_dataset
from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.extract import evaluate_model
from maskpre_tf.evaluation.plots import write_training_curves
from maskpre_tf.models.folding import FoldedEncoder
from maskpre_tf.models.maskpre import MaskPre, build_maskpre
from maskpre_tf.run_lock import RunLock
from maskpre_tf.training.clustering_callback import ClusteringCallback
from maskpre_tf.training.distribute import make_strategy, worker_info
from maskpre_tf.training.evaluation import EvaluationCallback
from maskpre_tf.training.phase import Phase
from maskpre_tf.training.progress import ProgressCallback
from maskpre_tf.training.source import load_data, pretrain_on_source
from maskpre_tf.training.state import RunState
from maskpre_tf.training.tensorboard import TensorBoardCallback


def log(message: str) -> None:
    """Print one progress line, flushed (the run is often watched through a pipe)."""
    print(message, flush=True)


@dataclass(frozen=True)
class Place:
    """Where a run runs: its strategy, the run's folder and this worker's own folder."""

    strategy: tf.distribute.Strategy
    out_dir: str
    own_dir: str  # the run's folder on the chief, a scratch folder on other workers
    is_chief: bool


def open_place(cfg: TrainConfig) -> Place:
    """1. The strategy first (multi-worker set-up precedes other TF); a command that does not
    fit the run's record is refused before anything is written; the folders."""
    strategy = make_strategy(cfg.run.strategy)
    worker = worker_info(strategy)
    out_dir = cfg.run.run_dir
    if worker.is_chief:
        runs.check_resume(cfg, out_dir)
    runs.prepare_run_dir(out_dir)
    own_dir = out_dir if worker.is_chief else os.path.join(out_dir, f"worker_{worker.index}")
    return Place(strategy, out_dir, own_dir, worker.is_chief)


@dataclass
class Networks:
    """The trained model and an inference embedder (BatchNorm folded) of each encoder."""

    model: MaskPre
    embeds: dict  # "teacher" / "student" → FoldedEncoder
    deployed: str  # the network the run delivers (--deploy_network)

    @property
    def other(self) -> str:
        return next(name for name in self.embeds if name != self.deployed)


def build_networks(cfg: TrainConfig, place: Place, num_train: int) -> Networks:
    """3. MaskPre under the strategy; feature extraction runs each encoder folded."""
    with place.strategy.scope():
        model = build_maskpre(cfg, num_train, place.strategy.num_replicas_in_sync)
    encoders = {"teacher": model.teacher, "student": model.student}
    embeds = {name: FoldedEncoder(net, place.strategy) for name, net in encoders.items()}
    return Networks(model, embeds, cfg.run.deploy_network)


def maskpre_phase(
    cfg: TrainConfig, place: Place, nets: Networks, data: datasets.ReidDataset
) -> Phase:
    """5. The MaskPre phase: its state, stream, stages (pseudo labels, evaluation), observers."""
    run, optim, size = cfg.run, cfg.optim, (cfg.data.height, cfg.data.width)
    num_train = len(data.train)
    state = RunState.create(np.full(num_train, -1), cfg.model.input_norm, track_best=True)
    camids = np.array([r.camid for r in data.train])
    # The sampler's labels come from state.labels each epoch; these only satisfy its checks.
    sampler = PKSampler(
        np.arange(num_train), camids, optim.batch_size, optim.num_instances, run.seed
    )
    paths = [r.path for r in data.train]
    stream = TrainStream(
        paths,
        state.labels.numpy,
        lambda: int(state.epoch),
        sampler,
        optim.iters,
        *size,
        seed=run.seed,
        pad=cfg.data.pad,
        erase_prob=cfg.data.erase_prob,
    )
    pseudo = ClusteringCallback(
        state,
        data.train,
        cfg.clustering,
        size,
        optim.num_ids_per_batch,
        nets.embeds[cfg.clustering.cluster_network],
        log=log,
    )
    evaluation = EvaluationCallback(
        state,
        data.query if place.is_chief else [],
        data.gallery,
        size,
        nets.embeds[nets.deployed],
        run.eval_every,
        optim.epochs,
        val=validation_split(cfg) if place.is_chief else None,
        best_path=os.path.join(place.out_dir, runs.BEST_WEIGHTS),
        log=log,
        deployed=getattr(nets.model, nets.deployed),
        other=(nets.other, nets.embeds[nets.other]) if run.eval_other else None,
        projector_dir=os.path.join(place.out_dir, runs.LOGS) if place.is_chief else "",
    )
    observers = [
        ProgressCallback(
            optim.batch_size, optim.iters, os.path.join(place.own_dir, runs.SUMMARY_EPOCHS), log
        )
    ]
    if place.is_chief:
        sample = next(iter(make_eval_dataset(paths[:4], *size, 4))).numpy()
        observers.append(TensorBoardCallback(os.path.join(place.out_dir, runs.LOGS), sample))
    return Phase(
        nets.model,
        place.strategy,
        stream,
        state,
        optim.epochs,
        checkpoints=os.path.join(place.own_dir, runs.CHECKPOINTS),
        resume_from=os.path.join(place.out_dir, runs.CHECKPOINTS),
        steps_per_loop=run.steps_per_loop,
        pseudo_labels=pseudo,
        evaluation=evaluation,
        observers=observers,
        log=log,
    )


def validation_split(cfg: TrainConfig) -> tuple[list, list] | None:
    """The labelled validation split of ``--keep_best`` (query, gallery), or None."""
    if not cfg.run.keep_best:
        return None
    val_data = datasets.load_dataset("auto", cfg.run.val_dir)
    return val_data.query, val_data.gallery


def figures_before(
    cfg: TrainConfig, place: Place, nets: Networks, data: datasets.ReidDataset
) -> dict:
    """4. A fresh run: the start's figures (and the source phase, which changes the start)."""
    size = (cfg.data.height, cfg.data.width)
    embed = nets.embeds[nets.deployed]
    evaluate_here = bool(data.query) and place.is_chief
    before = {}
    if cfg.source.source_dataset:
        if evaluate_here:
            before["initial"] = evaluate_model(embed, data.query, data.gallery, *size)
            log(
                f"initial weights: mAP {before['initial']['mAP']:.1%}, "
                f"Rank-1 {before['initial']['rank1']:.1%}"
            )
        pretrain_on_source(cfg, nets.model, place.strategy, place.is_chief, place.own_dir, log)
    if evaluate_here:
        before.update(evaluate_model(embed, data.query, data.gallery, *size))
        log(f"before MaskPre: mAP {before['mAP']:.1%}, Rank-1 {before['rank1']:.1%}")
    return before


def deliver(
    cfg: TrainConfig, place: Place, nets: Networks, data: datasets.ReidDataset, last: dict
) -> dict:
    """6. The deployed encoder's weights and its final figures (the last evaluation's, unless
    another epoch's weights were kept)."""
    final_path = os.path.join(place.out_dir, runs.ENCODER_WEIGHTS)
    best_path = os.path.join(place.out_dir, runs.BEST_WEIGHTS)
    deployed = getattr(nets.model, nets.deployed)
    if place.is_chief:
        if cfg.run.keep_best and os.path.exists(best_path):
            deployed.load_weights(best_path)
        runs.atomic_save_weights(deployed, final_path)
    if not (data.query and place.is_chief):
        return {}
    if cfg.run.keep_best or "mAP" not in last:
        size = (cfg.data.height, cfg.data.width)
        return evaluate_model(nets.embeds[nets.deployed], data.query, data.gallery, *size)
    return {k: last[k] for k in ("mAP", "rank1", "rank5", "rank10")}


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a whole training; returns the summary dict.

    The chief holds the run folder's lock (:class:`~maskpre_tf.run_lock.RunLock`) from before
    its first write to the end, on every exit path.
    """
    start = time.perf_counter()
    place = open_place(cfg)  # 1
    with RunLock(place.out_dir, log) if place.is_chief else contextlib.nullcontext():
        os.makedirs(place.own_dir, exist_ok=True)
        return train_in(cfg, place, start)


def train_in(cfg: TrainConfig, place: Place, start: float) -> dict:
    """2-6 of :func:`train`, the run's folder locked."""
    data = load_data(cfg, log)  # 2
    keras.utils.set_random_seed(cfg.run.seed)
    keras.mixed_precision.set_global_policy(cfg.optim.precision)
    nets = build_networks(cfg, place, len(data.train))  # 3
    phase = maskpre_phase(cfg, place, nets, data)
    first = phase.resume()  # 4
    if place.is_chief:  # the record is rewritten only once the checkpoint fits the model
        runs.write_config(cfg, place.out_dir, first, log=log)
    summary_path = os.path.join(place.out_dir, runs.SUMMARY)
    earlier = runs.read_json(summary_path) if first else {}
    if first >= cfg.optim.epochs and earlier.get("after") is not None:
        log(
            f"{place.out_dir}: all {cfg.optim.epochs} epochs are done (summary.json); nothing to "
            "train. Raise --epochs to train on, or pass a new --run_dir"
        )
        return earlier
    before = earlier.get("before", {}) if first else figures_before(cfg, place, nets, data)
    prior = earlier.get("seconds", 0.0)
    summary = {"before": before, "after": None, "config_digest": cfg.digest()}
    if place.is_chief:  # what is known so far survives a kill: the figures before training
        seconds = prior + time.perf_counter() - start
        runs.atomic_write_json(summary_path, {**summary, "seconds": seconds})
    try:
        last = phase.run(first)  # 5
    except tf.errors.NotFoundError as err:  # a training image removed while the run reads them
        raise UserError(
            f"a file the run reads has gone ({err.message.splitlines()[0][-300:]}); restore "
            "it and re-run the same command: the run resumes from its last checkpoint "
            f"({runs.latest_checkpoint(place.out_dir) or 'none yet'})"
        ) from err
    after = deliver(cfg, place, nets, data, last)  # 6
    summary.update(
        after=after,
        epochs=cfg.optim.epochs,
        seconds=prior + time.perf_counter() - start,
        deployed=nets.deployed,
        encoder_weights=os.path.join(place.out_dir, runs.ENCODER_WEIGHTS),
    )
    if after:
        log(
            f"after training: mAP {after['mAP']:.1%}, Rank-1 {after['rank1']:.1%}, "
            f"Rank-5 {after['rank5']:.1%}, Rank-10 {after['rank10']:.1%}"
        )
    if place.is_chief:
        try:  # a picture beside the logs; matplotlib is optional (the plots extra)
            write_training_curves(place.out_dir)
        except OSError as err:
            log(f"note: training_curves.png not written ({err.strerror})")
        weights = summary["encoder_weights"]
        log(f"done in {summary['seconds']:.0f} s; {nets.deployed} weights in {weights}")
        runs.atomic_write_json(summary_path, summary)
    return summary
