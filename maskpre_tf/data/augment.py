"""The standard re-ID training augmentation on RGB pixels, driven by stateless random ops.

Random horizontal flip, Pad + RandomCrop and random erasing (Zhong et al., AAAI 2020), each a
pure function of a stateless seed so a seeded run is reproducible. Pixels stay RGB in 0–255;
the encoder normalises them afterwards.
"""

from __future__ import annotations

import tensorflow as tf

# Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020): erased area as a
# fraction of the image, aspect-ratio lower bound r1 (upper bound 1 / r1), and the number of
# rectangle proposals tried before giving up on erasing an image.
# Erased rectangles are filled with the ImageNet mean colour, 0–255 RGB (torchvision's mean
# 0.485, 0.456, 0.406 × 255): close to 0 after any of the encoder's input normalisations.
ERASE_FILL = (123.675, 116.28, 103.53)
ERASE_AREA = (0.02, 0.4)
ERASE_MIN_ASPECT = 0.3
ERASE_ATTEMPTS = 100


def _stateless_randint(seed: tf.Tensor, upper: tf.Tensor) -> tf.Tensor:
    """A uniform int32 scalar in [0, upper) from a stateless [2] seed (upper: int32 scalar ≥ 1)."""
    draw = tf.random.stateless_uniform([], seed) * tf.cast(upper, tf.float32)
    return tf.minimum(tf.cast(tf.floor(draw), tf.int32), upper - 1)


def _erase_rectangle(image: tf.Tensor, seed: tf.Tensor, erase_prob: float) -> tf.Tensor:
    """Random erasing (Zhong et al., AAAI 2020) with stateless randomness.

    With probability ``erase_prob`` a rectangle of area ERASE_AREA × H·W and aspect ratio
    h/w drawn uniformly from [ERASE_MIN_ASPECT, 1/ERASE_MIN_ASPECT] is filled with the ImageNet
    mean colour (close to 0 after any input normalisation). As in the paper, proposals whose
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
    fill = tf.broadcast_to(tf.constant(ERASE_FILL, tf.float32), tf.shape(image))
    return tf.where(mask[:, :, None], fill, image)


def augment(image: tf.Tensor, seed: tf.Tensor, pad: int = 10, erase_prob: float = 0.5) -> tf.Tensor:
    """The standard re-ID training augmentation, reproducible from a stateless seed.

    In order: random horizontal flip (p 0.5); zero-padding by ``pad`` pixels on every side
    followed by a random crop back to H×W (torchvision's Pad(10) + RandomCrop); random erasing
    with probability ``erase_prob`` (Zhong et al., AAAI 2020; area 0.02–0.4 of the image, aspect
    0.3–1/0.3), the rectangle filled with the ImageNet mean colour (close to 0 after the encoder's
    normalisation). The same seed always gives the same output.

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
