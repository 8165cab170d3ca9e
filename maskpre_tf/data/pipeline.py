"""The tf.data pipelines: the P×K training stream and the in-order evaluation stream.

Both yield RGB pixels in 0–255 (float32); the encoder normalises them with its weights'
convention. Training images are decoded (:mod:`maskpre_tf.data.images`), augmented with stateless
seeds (:mod:`maskpre_tf.data.augment`) and grouped by the P×K sampler
(:mod:`maskpre_tf.data.sampler`), which clustering re-drives every epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from maskpre_tf.data.augment import augment
from maskpre_tf.data.images import load_image
from maskpre_tf.data.sampler import PKSampler
from maskpre_tf.errors import UserError

# Positions of one epoch's index stream fit below this; keys of different epochs never collide.
POSITIONS_PER_EPOCH = 1 << 32

# A training epoch samples up to this many spare chunks of ``extra_batches`` batches to refill
# batches after skipped unreadable images before giving up.
_MAX_SPARE_CHUNKS = 10


def pipeline_options() -> tf.data.Options:
    """Options of every pipeline here: deterministic order, no tf.data autotuning thread.

    With autotuning on, destroying an iterator (every epoch's end, every extraction's end) can
    block the caller until the autotuner's next wake-up, up to 60 s after the cancellation it
    should have woken on (measured 10-60 s at the end of training epochs on a 2-core CPU).
    Without it, ``AUTOTUNE`` map parallelism is the CPU count and prefetch buffers size
    themselves (tf.data's per-op buffer tuning, no thread); the demo stepped as fast.
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return options


def _default_extra_batches(num_batches: int) -> int:
    """Batches per spare chunk: max(2, ceil(2% of num_batches))."""
    return max(2, -(-num_batches // 50))


@dataclass(frozen=True)
class TrainStream:
    """What the training stream reads, each epoch: the images, their labels, the batch geometry.

    Attributes:
      paths: image paths; the sampler's indices are rows of this list.
      labels: returns the labels' one home (int [N], -1 = not sampled): the run's pseudo labels
        (checkpointed) or a labelled source's identities. Read when each epoch's iterator
        starts, so a clustering before the epoch changes the stream without rebuilding it.
      epoch: returns the current epoch number (seeds the sampler and the augmentation).
      sampler: the P×K sampler (its labels are set from ``labels`` every epoch).
      num_batches: batches per epoch.
      height, width: image size in pixels.
      seed: augmentation seed.
      pad: Pad+RandomCrop padding in pixels.
      erase_prob: random-erasing probability.
    """

    paths: Sequence[str]
    labels: Callable[[], np.ndarray]
    epoch: Callable[[], int]
    sampler: PKSampler
    num_batches: int
    height: int
    width: int
    seed: int
    pad: int = 10
    erase_prob: float = 0.5


@dataclass(frozen=True)
class _Shard:
    """This input pipeline's place: ``shard`` of ``shards`` pipelines feeding ``replicas``."""

    shards: int
    shard: int
    replicas: int
    groups_per_element: int  # identity groups in one per-replica batch
    elements: int  # per-replica batches this pipeline yields per epoch


def _shard_of(stream: TrainStream, context: tf.distribute.InputContext | None) -> _Shard:
    """The geometry of one input pipeline under ``context`` (None: the only one)."""
    shards, shard, replicas = 1, 0, 1
    if context is not None:
        shards, shard = context.num_input_pipelines, context.input_pipeline_id
        replicas = context.num_replicas_in_sync
    sampler = stream.sampler
    if sampler.num_pids_per_batch % replicas:
        raise UserError(
            f"--batch_size={sampler.batch_size} holds {sampler.num_pids_per_batch} identities of "
            f"--num_instances={sampler.num_instances}, which do not split over {replicas} "
            f"replicas; make --batch_size a multiple of --num_instances x {replicas}"
        )
    groups = sampler.num_pids_per_batch // replicas
    return _Shard(shards, shard, replicas, groups, stream.num_batches * replicas // shards)


class _EpochChunks:
    """Generator of one epoch's index stream in chunks: (indices, labels, epoch, start).

    The main chunk holds ``num_batches + extra`` batches; spare chunks of ``extra`` batches
    follow only when skipped groups leave the batches short. Chunk c is a slice of
    ``epoch_indices(epoch, n)`` for growing n, whose prefixes do not depend on n.
    """

    def __init__(self, stream: TrainStream, extra: int):
        self.stream, self.extra = stream, extra

    def __call__(self):
        stream, sampler = self.stream, self.stream.sampler
        epoch = int(stream.epoch())
        labels = np.asarray(stream.labels(), np.int64)
        sampler.set_labels(labels)
        done = 0
        for chunk in range(1 + _MAX_SPARE_CHUNKS):
            wanted = stream.num_batches + self.extra if chunk == 0 else self.extra
            indices = sampler.epoch_indices(epoch, done + wanted)[done * sampler.batch_size :]
            yield indices, labels[indices], np.int64(epoch), np.int64(done * sampler.batch_size)
            done += wanted
        raise UserError(
            f"training epoch {epoch} ran out of readable images: more than "
            f"{done - stream.num_batches} batches' worth of identity groups held unreadable "
            "files; run validate_images on the training set and drop the bad files"
        )


def _index_chunks(stream: TrainStream, extra: int) -> tf.data.Dataset:
    """Stage 1: the epoch's index chunks, as a dataset (labels read at iterator start)."""
    return tf.data.Dataset.from_generator(
        _EpochChunks(stream, extra),
        output_signature=(
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.int64),
        ),
    )


def _decoded_groups(stream: TrainStream, shard: _Shard, parallel: int):
    """Stage 2 (a flat_map function): one chunk → this pipeline's decoded identity groups.

    Each image is decoded and augmented with the stateless seed fold_in([seed, epoch], its
    position in the epoch's stream). The map runs in parallel over identity groups (the K
    consecutive instances of one identity) with deterministic order; a group holding an image
    that fails to decode is skipped whole and reported on stderr with its paths.
    """
    k = stream.sampler.num_instances
    height, width = stream.height, stream.width
    paths_t = tf.constant(list(stream.paths), dtype=tf.string)

    def epoch_groups(indices, labels, epoch, start):
        count = tf.size(indices, out_type=tf.int64)
        positions = start + tf.range(count, dtype=tf.int64)
        base_seed = tf.stack([tf.constant(stream.seed, tf.int64), epoch])

        def load_one(args):
            index, position = args
            image = load_image(tf.gather(paths_t, index), height, width)
            element_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
            return augment(image, element_seed, pad=stream.pad, erase_prob=stream.erase_prob)

        def load_group(group_indices, group_labels, group_positions):
            images = tf.map_fn(
                load_one,
                (group_indices, group_positions),
                fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
                parallel_iterations=1,  # parallelism comes from the tf.data map alone
            )
            # A key unique to this draw of the image (epoch, stream position): repeated copies
            # of one image in a batch (small clusters, singletons) get different DropBlock masks.
            keys = epoch * POSITIONS_PER_EPOCH + group_positions
            group = {"image": images, "index": group_indices, "label": group_labels, "key": keys}
            return group, group_positions[0] // k

        def report_skips(expected, element):
            group, group_number = element
            gap = (group_number - expected) // shard.shards

            def log():  # this pipeline's groups expected, expected + shards, ... were skipped
                skipped_groups = tf.range(expected, group_number, shard.shards)
                first = skipped_groups[:, None] * k - start + tf.range(k, dtype=tf.int64)[None]
                skipped = tf.gather(paths_t, tf.gather(indices, tf.reshape(first, [-1])))
                tf.print(
                    "warning: training epoch",
                    epoch,
                    "skipped",
                    gap,
                    "identity group(s) holding an unreadable image:",
                    skipped,
                    output_stream=sys.stderr,
                    summarize=2 * k,
                )
                return gap

            tf.cond(gap > 0, log, lambda: gap)
            return group_number + shard.shards, group

        groups = tf.data.Dataset.from_tensor_slices((indices, labels, positions)).batch(k)
        groups = groups.shard(shard.shards, shard.shard)  # chunks start at a whole batch
        groups = groups.map(load_group, num_parallel_calls=parallel, deterministic=True)
        groups = groups.ignore_errors()
        return groups.scan(start // k + shard.shard, report_skips)

    return epoch_groups


def _batches(groups: tf.data.Dataset, stream: TrainStream, shard: _Shard) -> tf.data.Dataset:
    """Stage 3: P / replicas groups → one per-replica batch; exactly the epoch's count."""
    rows = shard.groups_per_element * stream.sampler.num_instances
    image_shape = [rows, stream.height, stream.width, 3]

    def merge(group):  # [P, K, ...] → [B, ...], with static shapes for Keras
        merged = {key: tf.reshape(group[key], [rows]) for key in ("index", "label", "key")}
        return {"image": tf.reshape(group["image"], image_shape), **merged}

    dataset = groups.batch(shard.groups_per_element, drop_remainder=True)
    dataset = dataset.map(merge).take(shard.elements)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(shard.elements))
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def make_train_dataset(
    stream: TrainStream,
    input_context: tf.distribute.InputContext | None = None,
    *,
    num_parallel_calls: int | None = None,
    extra_batches: int | None = None,
) -> tf.data.Dataset:
    """The training pipeline, re-driven from the labels' home every time it is iterated.

    Build it once. Each new iterator reads ``stream.epoch()`` and ``stream.labels()`` and
    draws that epoch's P×K index stream from the sampler; images are decoded and augmented
    (:func:`_decoded_groups`) and grouped into batches (:func:`_batches`). A group holding an
    unreadable image is skipped as a whole (every batch stays exactly P identities × K
    instances); the batches refill from the stream, which samples ``extra_batches`` spare
    batches beyond ``num_batches`` and, lazily, up to 10 more such chunks. Run
    :func:`validate_images` first to keep bad files out.

    Args:
      stream: what the stream reads (:class:`TrainStream`).
      input_context: under ``strategy.distribute_datasets_from_function``, this input
        pipeline's place: it then yields per-replica batches of its own identity groups only
        (group g of the stream belongs to pipeline g mod num_input_pipelines), so each worker
        decodes its share of every global batch and nothing else. Without skipped groups, the
        union of the replicas' b-th batches is exactly the global batch b of the unsharded
        stream; a skipped group is refilled from the same pipeline's next group.
      num_parallel_calls: map parallelism; None = tf.data.AUTOTUNE.
      extra_batches: batches per spare chunk; None = max(2, ceil(2% of num_batches)).

    Returns:
      A dataset of exactly ``num_batches`` dicts (with ``input_context``: ``num_batches`` times
      the replicas per pipeline, each of B / replicas rows): "image" float32 [B, H, W, 3] RGB
      pixels in 0–255, "index" int64 [B] rows of ``paths``, "label" int64 [B] labels,
      "key" int64 [B] unique per drawn sample (epoch · 2^32 + position in the epoch's stream;
      DropBlock's mask key). If the spare chunks run out (a large share of unreadable files),
      iteration fails with a message naming the cause.
    """
    if stream.num_batches < 1:
        raise ValueError(f"num_batches must be positive, got {stream.num_batches}")
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    extra = _default_extra_batches(stream.num_batches) if extra_batches is None else extra_batches
    if extra < 1:
        raise ValueError(f"extra_batches must be positive, got {extra}")
    shard = _shard_of(stream, input_context)
    groups = _index_chunks(stream, extra).flat_map(_decoded_groups(stream, shard, parallel))
    return _batches(groups, stream, shard)


def make_eval_dataset(
    paths: Sequence[str], height: int, width: int, batch_size: int
) -> tf.data.Dataset:
    """The evaluation/feature-extraction pipeline: decode and resize; no augmentation.

    Order is preserved and the last partial batch is kept, so batch rows line up with
    ``paths``. An unreadable file raises an error when reached (dropping it would misalign the
    rows); check the files with :func:`validate_images` first.

    Args:
      paths: image paths.
      height: image height in pixels.
      width: image width in pixels.
      batch_size: images per batch.

    Returns:
      A dataset of float32 [b, height, width, 3] batches of RGB pixels in 0–255 (b ≤ batch_size).
    """
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), dtype=tf.string))
    dataset = dataset.map(
        lambda path: load_image(path, height, width),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())
