"""The tf.data input pipeline: image decoding, normalisation, augmentation and the P×K sampler.

Training, evaluation, gallery search and the exported serving signature all decode and normalise
images with the functions of this module, so a model sees exactly the same pixels everywhere:

* :func:`decode_image` — encoded JPEG/PNG bytes → float32 [H, W, 3] RGB in 0–255.
* :func:`normalize` — (x − ImageNet mean) / ImageNet std.
* :func:`augment` — the standard re-ID training augmentation (flip, Pad+RandomCrop, random
  erasing), driven by stateless random ops so a seeded run is reproducible.
* :class:`PKSampler` — batches of P pseudo-identities × K instances, re-driven with new pseudo
  labels after every clustering step.
* :func:`validate_images` — a cheap header/trailer check that finds unreadable files up front.
* :func:`make_train_dataset` / :func:`make_eval_dataset` — the tf.data pipelines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf.errors import UserError

# ImageNet channel statistics (RGB), on the 0–255 pixel scale: the usual torchvision values
# mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) multiplied by 255.
IMAGENET_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)

# Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020): erased area as a
# fraction of the image, aspect-ratio lower bound r1 (upper bound 1 / r1), and the number of
# rectangle proposals tried before giving up on erasing an image.
ERASE_AREA = (0.02, 0.4)
ERASE_MIN_ASPECT = 0.3
ERASE_ATTEMPTS = 100

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND"
# How many trailing bytes are searched for the end marker: tolerates padding or metadata that
# some writers append after the JPEG EOI marker / the PNG IEND chunk.
_TRAILER_BYTES = 1024


# --------------------------------------------------------------------------------------------
# Decoding, normalisation, augmentation
# --------------------------------------------------------------------------------------------


def decode_image(image_bytes: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Decode an encoded JPEG or PNG image and resize it bilinearly.

    Grayscale and RGBA images are promoted/reduced to RGB; 16-bit PNGs are scaled to 8 bit.
    Resizing is bilinear with antialiasing, which matches PIL's bilinear resize when shrinking
    and is plain bilinear interpolation when enlarging (e.g. Market-1501's 128×64 → 256×128).
    Graph-safe (usable inside tf.data, tf.function and a SavedModel signature).

    Args:
      image_bytes: scalar tf.string tensor holding the encoded file.
      height: output height in pixels.
      width: output width in pixels.

    Returns:
      float32 tensor [height, width, 3], RGB, values in 0–255.
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.image.resize(
        tf.cast(image, tf.float32), (height, width), method="bilinear", antialias=True
    )
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((height, width, 3))
    return image


def load_image(path: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Read and decode one image file: :func:`decode_image` of the file's bytes.

    Args:
      path: scalar tf.string tensor, the file's path.
      height: output height in pixels.
      width: output width in pixels.

    Returns:
      float32 [height, width, 3] RGB in 0–255.
    """
    return decode_image(tf.io.read_file(path), height, width)


def normalize(images: tf.Tensor) -> tf.Tensor:
    """Normalise RGB pixels with the ImageNet statistics: (x − mean) / std per channel.

    Args:
      images: float32 [..., H, W, 3], RGB in 0–255.

    Returns:
      float32 tensor of the same shape, roughly zero-mean and unit-variance.
    """
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (tf.cast(images, tf.float32) - mean) / std


def _stateless_randint(seed: tf.Tensor, upper: tf.Tensor) -> tf.Tensor:
    """A uniform int32 scalar in [0, upper) from a stateless [2] seed (upper: int32 scalar ≥ 1)."""
    draw = tf.random.stateless_uniform([], seed) * tf.cast(upper, tf.float32)
    return tf.minimum(tf.cast(tf.floor(draw), tf.int32), upper - 1)


def _erase_rectangle(image: tf.Tensor, seed: tf.Tensor, erase_prob: float) -> tf.Tensor:
    """Random erasing (Zhong et al., AAAI 2020) with stateless randomness.

    With probability ``erase_prob`` a rectangle of area ERASE_AREA × H·W and aspect ratio
    h/w drawn uniformly from [ERASE_MIN_ASPECT, 1/ERASE_MIN_ASPECT] is filled with the ImageNet
    mean colour (so it becomes 0 after :func:`normalize`). As in the paper, proposals whose
    height or width does not fit the image are rejected; ERASE_ATTEMPTS proposals are drawn at
    once and the first one that fits is used (none fitting: the image is left unchanged).

    Args:
      image: float32 [H, W, 3] in 0–255.
      seed: int32/int64 [2] stateless seed.
      erase_prob: probability of erasing a rectangle.

    Returns:
      float32 [H, W, 3].
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    shape = tf.shape(image)
    h_img, w_img = shape[0], shape[1]
    h_f, w_f = tf.cast(h_img, tf.float32), tf.cast(w_img, tf.float32)

    lo, hi = ERASE_AREA
    area = tf.random.stateless_uniform([ERASE_ATTEMPTS], seeds[0], lo, hi) * h_f * w_f
    aspect = tf.random.stateless_uniform(
        [ERASE_ATTEMPTS], seeds[1], ERASE_MIN_ASPECT, 1.0 / ERASE_MIN_ASPECT
    )
    rect_h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    rect_w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (rect_h < h_img) & (rect_w < w_img) & (rect_h > 0) & (rect_w > 0)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    rect_h, rect_w = rect_h[first], rect_w[first]

    do_erase = tf.random.stateless_uniform([], seeds[2]) < erase_prob
    do_erase = do_erase & tf.reduce_any(fits)

    # Top-left corner uniform over all positions where the rectangle fits (inclusive bounds).
    top = _stateless_randint(seeds[3], h_img - rect_h + 1)
    left = _stateless_randint(seeds[4], w_img - rect_w + 1)
    rows = tf.range(h_img)
    cols = tf.range(w_img)
    in_rows = (rows >= top) & (rows < top + rect_h)
    in_cols = (cols >= left) & (cols < left + rect_w)
    mask = in_rows[:, None] & in_cols[None, :] & do_erase
    fill = tf.broadcast_to(tf.constant(IMAGENET_MEAN, tf.float32), tf.shape(image))
    return tf.where(mask[:, :, None], fill, image)


def augment(image: tf.Tensor, seed: tf.Tensor, pad: int = 10, erase_prob: float = 0.5) -> tf.Tensor:
    """The standard re-ID training augmentation, reproducible from a stateless seed.

    In order: random horizontal flip (p 0.5); zero-padding by ``pad`` pixels on every side
    followed by a random crop back to H×W (torchvision's Pad(10) + RandomCrop); random erasing
    with probability ``erase_prob`` (Zhong et al., AAAI 2020; area 0.02–0.4 of the image, aspect
    0.3–1/0.3), the rectangle filled with the ImageNet mean colour so that it is exactly 0 after
    :func:`normalize`. The same seed always gives the same output.

    Args:
      image: float32 [H, W, 3] RGB in 0–255.
      seed: int32 or int64 tensor [2].
      pad: padding in pixels before the random crop (0 disables padding and cropping).
      erase_prob: probability of random erasing (0 disables it).

    Returns:
      float32 [H, W, 3] RGB in 0–255 (erased pixels equal the ImageNet mean).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    static_shape = image.shape
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])
    if pad > 0:
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, size=tf.shape(image), seed=seeds[1])
    if erase_prob > 0:
        image = _erase_rectangle(image, seeds[2], erase_prob)
    image.set_shape(static_shape)
    return image


# --------------------------------------------------------------------------------------------
# P×K sampler
# --------------------------------------------------------------------------------------------


class PKSampler:
    """Draws batches of P pseudo-identities × K instances, preferring different cameras.

    A batch of ``batch_size`` indices holds P = batch_size // num_instances distinct
    pseudo-identities with K = num_instances consecutive instances each. Identities are drawn
    without replacement until every identity has been used, then reshuffled. The K instances of
    an identity are taken round-robin over its cameras in random order — one image per camera
    before a second image from any camera — which realises the "other cameras first, then the
    same camera" preference of cluster-contrast's RandomMultipleGallerySampler (Dai et al.,
    2021). An identity with fewer than K images contributes all of them plus images drawn again
    with replacement. Label −1 marks clustering outliers, which are never sampled.

    The stream is a pure function of (seed, epoch, labels); :meth:`set_labels` re-drives the
    sampler after each clustering step.
    """

    def __init__(
        self,
        labels: np.ndarray,
        camids: np.ndarray,
        batch_size: int,
        num_instances: int,
        seed: int,
    ) -> None:
        """Create the sampler.

        Args:
          labels: int [N] pseudo labels, −1 = outlier (excluded).
          camids: int [N] camera index of each image.
          batch_size: images per batch (B = P × K).
          num_instances: K, images per identity in a batch.
          seed: base seed; the stream of epoch e depends on (seed, e, labels) only.

        Raises:
          UserError: batch geometry is invalid or the labels have fewer than P identities.
        """
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise UserError(
                f"batch size {batch_size} must be a positive multiple of the number of "
                f"instances per identity {num_instances}; set --batch_size to P × "
                "--num_instances"
            )
        self._camids = np.asarray(camids, dtype=np.int64).reshape(-1)
        self._batch_size = int(batch_size)
        self._num_instances = int(num_instances)
        self._seed = int(seed) % (2**63)
        self._labels = np.empty(0, np.int64)
        self._groups: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.set_labels(labels)

    @property
    def batch_size(self) -> int:
        """Images per batch (P × K)."""
        return self._batch_size

    @property
    def num_instances(self) -> int:
        """K: instances per identity in a batch."""
        return self._num_instances

    @property
    def num_pids_per_batch(self) -> int:
        """P: distinct identities per batch."""
        return self._batch_size // self._num_instances

    @property
    def num_identities(self) -> int:
        """Number of distinct non-outlier pseudo-identities in the current labels."""
        return len(self._groups)

    @property
    def labels(self) -> np.ndarray:
        """The current pseudo labels, int64 [N] (a read-only view)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    def set_labels(self, labels: np.ndarray) -> None:
        """Replace the pseudo labels (call after every clustering step).

        Args:
          labels: int [N] pseudo labels, −1 = outlier; N must equal len(camids).

        Raises:
          UserError: fewer than P identities, or a length mismatch.
        """
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.shape != self._camids.shape:
            raise UserError(
                f"got {labels.size} pseudo labels for {self._camids.size} images; the label "
                "array must have one entry per training image"
            )
        keep = np.flatnonzero(labels >= 0)
        order = keep[np.argsort(labels[keep], kind="stable")]
        sorted_labels = labels[order]
        boundaries = np.flatnonzero(np.diff(sorted_labels)) + 1
        groups = []
        for members in np.split(order, boundaries) if order.size else []:
            _, cam_codes = np.unique(self._camids[members], return_inverse=True)
            cam_codes = cam_codes.astype(np.int64)
            groups.append((members, cam_codes, int(cam_codes.max()) + 1))
        needed = self.num_pids_per_batch
        if len(groups) < needed:
            raise UserError(
                f"clustering produced {len(groups)} clusters but the batch needs {needed} "
                f"(batch size {self._batch_size} / {self._num_instances} instances); lower "
                "--batch_size or --num_instances / adjust --eps"
            )
        self._labels = labels
        self._groups = groups

    def _instances(self, group: int, rng: np.random.Generator) -> np.ndarray:
        """K image indices of one identity: round-robin over its cameras, then replacement.

        Returns:
          int64 [K] row indices.
        """
        members, cams, num_cams = self._groups[group]
        k = self._num_instances
        n = members.size
        perm = rng.permutation(n)
        cams_p = cams[perm]
        # Rank of each (shuffled) image within its camera, then interleave cameras in a random
        # order: key = rank * num_cams + camera position.
        by_cam = np.argsort(cams_p, kind="stable")
        sorted_cams = cams_p[by_cam]
        rank = np.empty(n, np.int64)
        rank[by_cam] = np.arange(n) - np.searchsorted(sorted_cams, sorted_cams, side="left")
        cam_position = rng.permutation(num_cams)
        ordered = members[perm][np.argsort(rank * num_cams + cam_position[cams_p])]
        if n >= k:
            return ordered[:k]
        return np.concatenate([ordered, rng.choice(members, size=k - n, replace=True)])

    def epoch_indices(self, epoch: int, num_batches: int) -> np.ndarray:
        """The image indices of one epoch.

        Args:
          epoch: epoch number (part of the random seed).
          num_batches: number of batches to draw.

        Returns:
          int64 [num_batches * batch_size]; each consecutive block of batch_size entries is one
          batch of P identities × K consecutive instances.
        """
        rng = np.random.default_rng([self._seed, int(epoch) % (2**63)])
        p = self.num_pids_per_batch
        num_ids = self.num_identities
        order = rng.permutation(num_ids)
        cursor = 0
        out = np.empty((num_batches, p, self._num_instances), np.int64)
        for b in range(num_batches):
            chosen = order[cursor : cursor + p]
            cursor += p
            if chosen.size < p:
                # Cycle exhausted: reshuffle, keeping this batch's identities distinct by moving
                # the ones already chosen to the end of the new cycle.
                fresh = rng.permutation(num_ids)
                used = np.isin(fresh, chosen)
                order = np.concatenate([fresh[~used], fresh[used]])
                cursor = p - chosen.size
                chosen = np.concatenate([chosen, order[:cursor]])
            for slot, group in enumerate(chosen):
                out[b, slot] = self._instances(int(group), rng)
        return out.reshape(-1)


# --------------------------------------------------------------------------------------------
# File validation
# --------------------------------------------------------------------------------------------


def image_file_problem(path: str) -> str | None:
    """Why an image file cannot be used, from its header and trailer only (no decoding).

    Checks: the file exists and is not empty; it starts with the JPEG (FF D8 FF) or PNG
    signature; a JPEG has its end-of-image marker FF D9 and a PNG its IEND chunk within the last
    1 KiB (a truncated download or copy loses them).

    Args:
      path: file path.

    Returns:
      None for a usable file, else a short reason ("missing", "empty", "not a JPEG or PNG file",
      "truncated JPEG (no end marker)", "truncated PNG (no IEND chunk)").
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if not head:
                return "empty"
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TRAILER_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        return "not a JPEG or PNG file"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if head.startswith(_JPEG_MAGIC):
        return None if _JPEG_END in tail else "truncated JPEG (no end marker)"
    if head.startswith(_PNG_MAGIC):
        return None if _PNG_END in tail else "truncated PNG (no IEND chunk)"
    return "not a JPEG or PNG file"


def validate_images(paths: Sequence[str]) -> list[str]:
    """The paths that are missing, empty, not JPEG/PNG, or truncated (see image_file_problem).

    Reads at most 8 + 1024 bytes per file, so checking a Market-1501-sized set (13k files) is
    far faster than decoding it.

    Args:
      paths: image file paths.

    Returns:
      The bad paths, in input order (empty when all are usable).
    """
    return [path for path in paths if image_file_problem(path) is not None]


# --------------------------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------------------------


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
) -> tf.data.Dataset:
    """The training pipeline, re-driven by the sampler every time it is iterated.

    Build it once. Each new iterator calls ``epoch_fn()`` for the current epoch number and
    ``sampler.epoch_indices(epoch, ...)`` with the sampler's labels at that moment, so a
    clustering step that calls ``sampler.set_labels`` before the next epoch's iterator is
    created changes the stream without rebuilding the graph. (With Keras ``fit``, leave
    ``steps_per_epoch`` unset: Keras then creates a fresh iterator for every epoch, after
    ``on_epoch_begin``.)

    Every image is decoded, augmented with the stateless seed
    fold_in([seed, epoch], position in the epoch's index stream) and normalised. The map runs in
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

    Returns:
      A dataset of exactly ``num_batches`` dicts: "image" float32 [B, H, W, 3] normalised,
      "index" int64 [B] rows of ``paths``, "label" int64 [B] pseudo labels. If the spare chunks
      run out (a large share of unreadable files), iteration fails with a message naming the
      cause.
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
            return normalize(augment(image, element_seed, pad=pad, erase_prob=erase_prob))

        def load_group(group_indices, group_labels, group_positions):
            images = tf.map_fn(
                load_one,
                (group_indices, group_positions),
                fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
                parallel_iterations=1,  # parallelism comes from the tf.data map alone
            )
            group = {"image": images, "index": group_indices, "label": group_labels}
            return group, group_positions[0] // k

        def report_skips(expected, element):
            group, group_number = element
            gap = group_number - expected

            def log():
                first, last = expected * k - start, group_number * k - start
                skipped = tf.gather(paths_t, indices[first:last])
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
            return group_number + 1, group

        groups = tf.data.Dataset.from_tensor_slices((indices, labels, positions)).batch(k)
        groups = groups.map(load_group, num_parallel_calls=parallel, deterministic=True)
        groups = groups.ignore_errors()
        return groups.scan(start // k, report_skips)

    def merge_groups(groups):
        # [P, K, ...] → [B, ...], with static shapes for Keras.
        return {
            "image": tf.reshape(groups["image"], [batch_size, height, width, 3]),
            "index": tf.reshape(groups["index"], [batch_size]),
            "label": tf.reshape(groups["label"], [batch_size]),
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
    dataset = dataset.batch(sampler.num_pids_per_batch, drop_remainder=True)
    dataset = dataset.map(merge_groups).take(num_batches)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def make_eval_dataset(
    paths: Sequence[str], height: int, width: int, batch_size: int
) -> tf.data.Dataset:
    """The evaluation/feature-extraction pipeline: decode, resize, normalise; no augmentation.

    Order is preserved and the last partial batch is kept, so batch rows line up with
    ``paths``. An unreadable file raises an error when reached (dropping it would misalign the
    rows); check the files with :func:`validate_images` first.

    Args:
      paths: image paths.
      height: image height in pixels.
      width: image width in pixels.
      batch_size: images per batch.

    Returns:
      A dataset of float32 [b, height, width, 3] normalised batches (b ≤ batch_size).
    """
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths), dtype=tf.string))
    dataset = dataset.map(
        lambda path: normalize(load_image(path, height, width)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
