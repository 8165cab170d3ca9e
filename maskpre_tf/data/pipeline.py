"""The tf.data pipelines: the P×K training stream and the in-order evaluation stream.

Both yield RGB pixels in 0–255 (float32); the encoder normalises them with its weights'
convention. Training images are decoded (:mod:`maskpre_tf.data.images`), augmented with stateless
seeds (:mod:`maskpre_tf.data.augment`) and grouped by the P×K sampler
(:mod:`maskpre_tf.data.sampler`), which clustering re-drives every epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

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


def _default_extra_batches(num_batches: int) -> int:
    """Batches per spare chunk: max(2, ceil(2% of num_batches))."""
    return max(2, -(-num_batches // 50))


def make_train_dataset(
    paths: Sequence[str],
    sampler: PKSampler,
    epoch_fn: Callable[[], int],
    num_batches: int,
    height: int,
    width: int,
    batch_size: int,
    seed: int,
    pad: int = 10,
    erase_prob: float = 0.5,
    *,
    num_parallel_calls: int | None = None,
    extra_batches: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """The training pipeline, re-driven by the sampler every time it is iterated.

    Build it once. Each new iterator calls ``epoch_fn()`` for the current epoch number and
    ``sampler.epoch_indices(epoch, ...)`` with the sampler's labels at that moment, so a
    clustering step that calls ``sampler.set_labels`` before the next epoch's iterator is
    created changes the stream without rebuilding the graph. (With Keras ``fit``, leave
    ``steps_per_epoch`` unset: Keras then creates a fresh iterator for every epoch, after
    ``on_epoch_begin``.)

    Every image is decoded, augmented with the stateless seed
    fold_in([seed, epoch], position in the epoch's index stream). The map runs in
    parallel over identity groups (the K consecutive instances of one identity), with
    deterministic ordering. A group holding an image that fails to decode is skipped as a whole
    (which keeps every batch exactly P identities × K instances) and reported on stderr with its
    paths; the batches refill from the stream, which samples ``extra_batches`` spare batches
    beyond ``num_batches`` and, lazily, up to 10 more such chunks before ``take(num_batches)``.
    The dataset's cardinality is ``num_batches``, so Keras knows the epoch length. Run
    :func:`validate_images` first (and give bad files label −1) to keep bad files out.

    Args:
      paths: image paths; the sampler's indices are rows of this list.
      sampler: the P×K sampler (its batch size must equal ``batch_size``).
      epoch_fn: returns the current epoch number; called once per iteration.
      num_batches: batches per iteration (one epoch).
      height: image height in pixels.
      width: image width in pixels.
      batch_size: images per batch.
      seed: augmentation seed.
      pad: Pad+RandomCrop padding in pixels.
      erase_prob: random-erasing probability.
      num_parallel_calls: map parallelism; None = tf.data.AUTOTUNE.
      extra_batches: batches per spare chunk; None = max(2, ceil(2% of num_batches)).
      input_context: under ``strategy.distribute_datasets_from_function``, this input
        pipeline's place: it then yields per-replica batches of its own identity groups only
        (group g of the stream belongs to pipeline g mod num_input_pipelines), so each worker
        decodes its share of every global batch and nothing else. Without skipped groups, the
        union of the replicas' b-th batches is exactly the global batch b of the unsharded
        stream; a skipped group is refilled from the same pipeline's next group.

    Returns:
      A dataset of exactly ``num_batches`` dicts (with ``input_context``: ``num_batches`` times
      the replicas per pipeline, each of B / replicas rows): "image" float32 [B, H, W, 3] RGB
      pixels in 0–255, "index" int64 [B] rows of ``paths``, "label" int64 [B] pseudo labels,
      "key" int64 [B] unique per drawn sample (epoch · 2^32 + position in the epoch's stream;
      DropBlock's mask key).
      If the spare chunks run out (a large share of unreadable files), iteration fails with a
      message naming the cause.
    """
    if batch_size != sampler.batch_size:
        raise ValueError(
            f"batch_size {batch_size} differs from the sampler's batch size {sampler.batch_size}"
        )
    if num_batches < 1:
        raise ValueError(f"num_batches must be positive, got {num_batches}")
    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    extra = _default_extra_batches(num_batches) if extra_batches is None else extra_batches
    if extra < 1:
        raise ValueError(f"extra_batches must be positive, got {extra}")
    k = sampler.num_instances
    shards, shard, replicas = 1, 0, 1
    if input_context is not None:
        shards = input_context.num_input_pipelines
        shard = input_context.input_pipeline_id
        replicas = input_context.num_replicas_in_sync
    if sampler.num_pids_per_batch % replicas:
        raise UserError(
            f"--batch_size={batch_size} holds {sampler.num_pids_per_batch} identities of "
            f"--num_instances={k}, which do not split over {replicas} replicas; make "
            f"--batch_size a multiple of --num_instances x {replicas}"
        )
    groups_per_element = sampler.num_pids_per_batch // replicas
    rows = groups_per_element * k
    elements = num_batches * replicas // shards
    paths_t = tf.constant(list(paths), dtype=tf.string)

    def generate_epoch():
        # One element per chunk of the epoch's index stream: the main chunk, then spare chunks
        # only when skipped groups leave the batches short. Chunk c is a slice of
        # epoch_indices(epoch, n) for growing n, whose prefixes do not depend on n.
        epoch = int(epoch_fn())
        labels = np.array(sampler.labels)
        done = 0
        for chunk in range(1 + _MAX_SPARE_CHUNKS):
            wanted = num_batches + extra if chunk == 0 else extra
            indices = sampler.epoch_indices(epoch, done + wanted)[done * batch_size :]
            yield indices, labels[indices], np.int64(epoch), np.int64(done * batch_size)
            done += wanted
        raise UserError(
            f"training epoch {epoch} ran out of readable images: more than "
            f"{done - num_batches} batches' worth of identity groups held unreadable files; run "
            "validate_images on the training set and drop the bad files"
        )

    def epoch_groups(indices, labels, epoch, start):
        count = tf.size(indices, out_type=tf.int64)
        positions = start + tf.range(count, dtype=tf.int64)
        base_seed = tf.stack([tf.constant(seed, tf.int64), epoch])

        def load_one(args):
            index, position = args
            image = load_image(tf.gather(paths_t, index), height, width)
            element_seed = tf.random.experimental.stateless_fold_in(base_seed, position)
            return augment(image, element_seed, pad=pad, erase_prob=erase_prob)

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
            gap = (group_number - expected) // shards

            def log():  # this pipeline's groups expected, expected + shards, ... were skipped
                skipped_groups = tf.range(expected, group_number, shards)
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
            return group_number + shards, group

        groups = tf.data.Dataset.from_tensor_slices((indices, labels, positions)).batch(k)
        groups = groups.shard(shards, shard)  # chunks start at a whole batch: shards align
        groups = groups.map(load_group, num_parallel_calls=parallel, deterministic=True)
        groups = groups.ignore_errors()
        return groups.scan(start // k + shard, report_skips)

    def merge_groups(groups):
        # [P, K, ...] → [B, ...], with static shapes for Keras.
        return {
            "image": tf.reshape(groups["image"], [rows, height, width, 3]),
            "index": tf.reshape(groups["index"], [rows]),
            "label": tf.reshape(groups["label"], [rows]),
            "key": tf.reshape(groups["key"], [rows]),
        }

    dataset = tf.data.Dataset.from_generator(
        generate_epoch,
        output_signature=(
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec([], tf.int64),
        ),
    )
    dataset = dataset.flat_map(epoch_groups)
    dataset = dataset.batch(groups_per_element, drop_remainder=True)
    dataset = dataset.map(merge_groups).take(elements)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(elements))
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


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
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
