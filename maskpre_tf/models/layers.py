"""Feature-map layers for MaskPre: generalized-mean pooling and a keyed, dynamic DropBlock.

``GeMPooling`` turns the backbone's region-level map [B, H, W, C] into one descriptor per image.
``DropBlock`` masks contiguous square regions of that map to build the differently masked views
MaskPre learns from. Its mask is a pure function of a per-sample integer key (no RNG state), so
a sample's mask does not depend on how the global batch is split across replicas, and the two
views of one image get different masks simply by using different keys.
"""

from __future__ import annotations

import keras
import tensorflow as tf

_MASK32 = 0xFFFFFFFF
# Multipliers of the "lowbias32" integer hash (C. Wellons, hash-prospector, 2018).
_HASH_MUL_A = 0x7FEB352D
_HASH_MUL_B = 0x846CA68B
# Salts that separate the key stream, the position stream and the per-layer seed.
_SALT_KEY_HIGH = 0x9E3779B9
_SALT_POSITION = 0x85EBCA6B
_SALT_SEED = 0xC2B2AE35
_CALIBRATION_STEPS = 32

# Moving-average momentum of every BatchNormalization in the models: PyTorch's default (0.1
# in its convention, 0.9 in Keras's), which the re-ID recipes are tuned with.
# keras.applications' MobileNetV2 uses 0.999: after a CPU protocol's 720 steps half of its
# inference statistics would still be ImageNet's, so the network evaluated (and clustered)
# would not be the one trained.
BN_MOMENTUM = 0.9


def _mul32(a: tf.Tensor, c: int) -> tf.Tensor:
    """(a * c) mod 2**32 for int64 ``a`` in [0, 2**32) and a constant ``c`` < 2**32.

    The product is split into 16-bit halves so every intermediate stays below 2**49: no int64
    overflow on any backend (CPU, GPU, XLA).
    """
    low = tf.bitwise.bitwise_and(a, 0xFFFF) * c
    high = tf.bitwise.bitwise_and(tf.bitwise.right_shift(a, 16) * c, 0xFFFF)
    high = tf.bitwise.left_shift(high, 16)
    return tf.bitwise.bitwise_and(low + high, _MASK32)


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """Bijective 32-bit integer hash ("lowbias32") of int64 values in [0, 2**32).

    Returns int64 values in [0, 2**32) whose bits look independent of the input bits.
    """
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = _mul32(x, _HASH_MUL_A)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = _mul32(x, _HASH_MUL_B)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hash_uniform(keys: tf.Tensor, counters: tf.Tensor, seed: int = 0) -> tf.Tensor:
    """Counter-based uniform numbers: one value in [0, 1) per (key, counter) pair.

    Args:
      keys: int32/int64 [B], any value (negative keys are used by their 64-bit pattern).
      counters: int32/int64 [N], non-negative, below 2**32 (e.g. flat positions in a map).
      seed: extra Python int mixed into every value (different layers, different streams).

    Returns:
      float32 [B, N]; entries are multiples of 2**-24 in [0, 1). A pure function of its inputs:
      the same (key, counter, seed) always gives the same number, in eager and graph mode.
    """
    keys = tf.cast(keys, tf.int64)
    low = tf.bitwise.bitwise_and(keys, _MASK32)
    high = tf.bitwise.bitwise_and(tf.bitwise.right_shift(keys, 32), _MASK32)
    seed_word = tf.constant((seed * _SALT_SEED) & _MASK32, tf.int64)
    key_hash = _mix32(tf.bitwise.bitwise_xor(low, _mix32(tf.bitwise.bitwise_xor(high, seed_word))))
    counters = tf.cast(counters, tf.int64)
    position_hash = _mix32(tf.bitwise.bitwise_xor(counters, _SALT_POSITION))
    mixed = _mix32(tf.bitwise.bitwise_xor(key_hash[:, None], position_hash[None, :]))
    mantissa = tf.bitwise.right_shift(mixed, 8)
    return tf.cast(mantissa, tf.float32) * (1.0 / (1 << 24))


def linear_drop_rate(step, total_steps, target_rate) -> tf.Tensor:
    """Drop rate ramped linearly from 0 at step 0 to ``target_rate`` at ``total_steps``.

    The "dynamic" schedule of DropBlock (Ghiasi et al., NeurIPS 2018: decreasing keep_prob
    linearly from 1 beats a fixed rate from the start). Steps beyond ``total_steps`` keep the
    target; ``total_steps <= 0`` means no ramp.

    Args:
      step: scalar int or float (tensor or Python number), the current training step.
      total_steps: scalar, length of the ramp in steps.
      target_rate: scalar float in [0, 1), the final fraction of positions to drop.

    Returns:
      float32 scalar tensor in [0, target_rate].
    """
    step = tf.cast(step, tf.float32)
    total = tf.cast(total_steps, tf.float32)
    target = tf.cast(target_rate, tf.float32)
    progress = tf.where(total > 0.0, tf.clip_by_value(step / tf.maximum(total, 1.0), 0.0, 1.0), 1.0)
    return target * progress


def block_coverage_counts(height, width, block_size: int) -> tf.Tensor:
    """How many valid block anchors cover each position of an H x W map.

    A block anchored at (i, j) (its top-left cell; 0 <= i <= H - bs, 0 <= j <= W - bs) covers
    rows i..i+bs-1 and columns j..j+bs-1.

    Returns:
      float32 [H, W] with values in 1..block_size**2 (block_size**2 away from the borders).
    """

    def per_axis(n):
        index = tf.range(n)
        first = tf.maximum(index - block_size + 1, 0)
        last = tf.minimum(index, n - block_size)
        return tf.cast(last - first + 1, tf.float32)

    return per_axis(height)[:, None] * per_axis(width)[None, :]


def paper_gamma(rate: tf.Tensor, height, width, block_size: int) -> tf.Tensor:
    """Seed probability of DropBlock as in Ghiasi et al. (NeurIPS 2018, eq. 1).

    gamma = rate / bs**2 * (H * W) / ((H - bs + 1) * (W - bs + 1)). It counts every seed as
    dropping bs**2 fresh positions, so overlapping blocks make the realised drop fraction
    smaller than ``rate`` (for a 16x8 map, bs 3, rate 0.3 it drops about 0.25 on average).

    Returns:
      float32 scalar (rate is a float scalar; H, W are Python ints or int scalars).
    """
    area = tf.cast(height * width, tf.float32)
    valid = tf.cast((height - block_size + 1) * (width - block_size + 1), tf.float32)
    return tf.cast(rate, tf.float32) / float(block_size * block_size) * area / valid


def calibrated_gamma(rate: tf.Tensor, height, width, block_size: int) -> tf.Tensor:
    """Seed probability whose expected drop fraction equals ``rate`` exactly.

    With independent seeds of probability gamma on the valid anchors, a position covered by n
    anchors is dropped with probability 1 - (1 - gamma)**n, so the expected dropped fraction is
    f(gamma) = mean_{positions} [1 - (1 - gamma)**n]. f rises monotonically from 0 to 1 on
    [0, 1]; this solves f(gamma) = rate by bisection (32 halvings, float32 resolution). Rate 0
    gives gamma 0 exactly (no seed at all), rate 1 gives gamma 1.

    Returns:
      float32 scalar in [0, 1].
    """
    rate = tf.clip_by_value(tf.cast(rate, tf.float32), 0.0, 1.0)
    counts = block_coverage_counts(height, width, block_size)
    low = tf.zeros([], tf.float32)
    high = tf.ones([], tf.float32)
    for _ in range(_CALIBRATION_STEPS):
        middle = 0.5 * (low + high)
        dropped = tf.reduce_mean(-tf.math.expm1(counts * tf.math.log1p(-middle)))
        too_many = dropped >= rate
        high = tf.where(too_many, middle, high)
        low = tf.where(too_many, low, middle)
    gamma = tf.where(rate >= 1.0, tf.ones([], tf.float32), low)
    return tf.where(rate <= 0.0, tf.zeros([], tf.float32), gamma)


def dropblock_keep_mask(
    keys: tf.Tensor,
    rate: tf.Tensor,
    height,
    width,
    block_size: int,
    calibrated: bool = True,
    seed: int = 0,
) -> tf.Tensor:
    """DropBlock keep mask as a pure function of (keys, rate, block_size, H, W, seed).

    Seeds are drawn with probability gamma (``calibrated_gamma`` or ``paper_gamma``) only at
    anchors where a whole block fits, from ``hash_uniform(key, flat position)``; each seed is
    dilated (max-pool) into a contiguous block_size x block_size square. Because the uniforms
    do not depend on the rate, a higher rate drops a superset of a lower rate's positions.

    Args:
      keys: int32/int64 [B] per-sample keys.
      rate: float scalar in [0, 1], the fraction of positions to drop.
      height, width: map size (Python ints or int32 scalars), each >= block_size.
      block_size: side of a square block in map cells.

    Returns:
      float32 [B, H, W, 1]: 1 = kept, 0 = dropped.
    """
    anchors_h = height - block_size + 1
    anchors_w = width - block_size + 1
    rows = tf.range(anchors_h, dtype=tf.int64)
    cols = tf.range(anchors_w, dtype=tf.int64)
    flat = tf.reshape(rows[:, None] * tf.cast(width, tf.int64) + cols[None, :], [-1])
    uniforms = hash_uniform(keys, flat, seed=seed)
    gamma_fn = calibrated_gamma if calibrated else paper_gamma
    gamma = gamma_fn(rate, height, width, block_size)
    seeds = tf.cast(uniforms < gamma, tf.float32)
    seeds = tf.reshape(seeds, tf.stack([-1, anchors_h, anchors_w, 1]))
    pad = block_size - 1
    seeds = tf.pad(seeds, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    dropped = tf.nn.max_pool2d(seeds, ksize=block_size, strides=1, padding="VALID")
    return 1.0 - dropped


def apply_keep(x: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """DropBlock's masking: x [B, H, W, C] * keep [B, H, W, 1] * (H * W / kept count), per sample.

    A sample whose cells are all dropped becomes 0. Per cell and per sample, so it commutes with
    any per-cell linear map without bias (a 1x1 convolution).
    """
    kept = tf.reduce_sum(keep, axis=[1, 2, 3], keepdims=True)
    area = tf.cast(tf.shape(keep)[1] * tf.shape(keep)[2], tf.float32)
    return x * tf.cast(keep * (area / tf.maximum(kept, 1.0)), x.dtype)


@keras.saving.register_keras_serializable(package="maskpre_tf")
class GeMPooling(keras.layers.Layer):
    """Generalized-mean pooling (Radenović, Tolias, Chum, TPAMI 2018).

    [B, H, W, C] -> [B, C]: (mean_{h,w} max(x, eps)**p)**(1/p) per channel. p = 1 is average
    pooling, p -> inf approaches max pooling. p is a scalar weight (trainable by default). The
    power mean is evaluated in float32 as exp((logsumexp(p * log x) - log(HW)) / p), which does
    not overflow for large p; the result is cast to the layer's compute dtype.
    """

    def __init__(self, p: float = 3.0, trainable_p: bool = True, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if p <= 0:
            raise ValueError(f"GeMPooling: p must be positive, got {p}.")
        self.initial_p = float(p)
        self.trainable_p = bool(trainable_p)
        self.eps = float(eps)

    def build(self, input_shape):
        self.p = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial_p),
            trainable=self.trainable_p,
            autocast=False,
            dtype="float32",
            name="p",
        )

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        p = tf.convert_to_tensor(self.p)
        log_x = tf.math.log(tf.maximum(x, self.eps))
        count = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
        log_mean = tf.reduce_logsumexp(p * log_x, axis=[1, 2]) - tf.math.log(count)
        return tf.cast(tf.exp(log_mean / p), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.initial_p, "trainable_p": self.trainable_p, "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="maskpre_tf")
class DropBlock(keras.layers.Layer):
    """Keyed DropBlock (Ghiasi, Lin, Le, NeurIPS 2018) for region-level feature maps.

    ``call(x, keys, rate, training=None) -> (y, keep_mask)``:
      x: float [B, H, W, C] (any float dtype; the mask is built in float32 and cast to x's).
      keys: int32/int64 [B], one key per sample; equal keys give equal masks.
      rate: float scalar (tensor or Python float) in [0, 1), scheduled by the caller (see
        ``linear_drop_rate``); the layer owns no schedule and no RNG state.
      keep_mask: float32 [B, H, W, 1], 1 = kept, 0 = dropped.
      y = x * keep_mask * (H * W / kept count), per sample (0 where every cell is dropped).
    With ``training`` falsy or rate 0, y is x unchanged and keep_mask is all ones.

    Args:
      block_size: block side in map cells (clamped to the map size when that is static).
      calibrated: True (default) solves for the seed probability that makes the expected
        dropped fraction equal ``rate``; False uses the paper's gamma, which drops less than
        ``rate`` because blocks overlap (see ``paper_gamma``).
      seed: Python int mixed into the hash, so two DropBlock layers fed the same keys draw
        different masks.
    """

    def __init__(self, block_size: int = 3, calibrated: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(block_size) < 1:
            raise ValueError(f"DropBlock: block_size must be >= 1, got {block_size}.")
        self.block_size = int(block_size)
        self.calibrated = bool(calibrated)
        self.seed = int(seed)
        # rate must stay float32 (not autocast to bfloat16) and may be a Python float.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def call(self, x, keys, rate, training=None):
        x = tf.convert_to_tensor(x)
        if self.autocast and x.dtype.is_floating and x.dtype.name != self.compute_dtype:
            x = tf.cast(x, self.compute_dtype)
        shape = tf.shape(x)
        height = x.shape[1] if x.shape[1] is not None else shape[1]
        width = x.shape[2] if x.shape[2] is not None else shape[2]
        block = self.block_size
        if isinstance(height, int) and isinstance(width, int):
            block = min(block, height, width)
        ones = tf.ones(tf.stack([shape[0], shape[1], shape[2], 1]), tf.float32)
        if training is None or (isinstance(training, bool) and not training):
            return x, ones
        rate = tf.cast(rate, tf.float32)
        if not isinstance(training, bool):
            rate = rate * tf.cast(training, tf.float32)
        keep = dropblock_keep_mask(
            keys, rate, height, width, block, calibrated=self.calibrated, seed=self.seed
        )
        return apply_keep(x, keep), keep

    def compute_output_shape(self, x_shape, keys_shape=None, rate_shape=None):
        return tuple(x_shape), (*tuple(x_shape[:3]), 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"block_size": self.block_size, "calibrated": self.calibrated, "seed": self.seed}
        )
        return config


__all__ = [
    "DropBlock",
    "GeMPooling",
    "apply_keep",
    "block_coverage_counts",
    "calibrated_gamma",
    "dropblock_keep_mask",
    "hash_uniform",
    "linear_drop_rate",
    "paper_gamma",
]
