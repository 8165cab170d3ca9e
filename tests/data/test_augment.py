"""Tests of maskpre_tf.data.augment: flip, pad-and-crop and random erasing, seeded statelessly."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from maskpre_tf.data.augment import (
    ERASE_FILL,  # noqa: E402
    augment,  # noqa: E402
)
from maskpre_tf.models.normalization import normalize_pixels  # noqa: E402

AH, AW = 64, 32
MEAN = np.array(ERASE_FILL, np.float32)


def _coordinate_image():
    """channel 0 = 3·row + 10, channel 1 = 6·col + 10, channel 2 = 200: position is readable."""
    rows, cols = np.meshgrid(np.arange(AH), np.arange(AW), indexing="ij")
    return np.stack([3 * rows + 10, 6 * cols + 10, np.full_like(rows, 200)], -1).astype(np.float32)


def _augment_many(image, count, pad, erase_prob, first_seed=0):
    seeds = tf.stack([tf.range(first_seed, first_seed + count), tf.zeros(count, tf.int32)], 1)

    @tf.function
    def run(seeds):
        return tf.map_fn(
            lambda seed: augment(tf.constant(image), seed, pad, erase_prob),
            seeds,
            fn_output_signature=tf.float32,
        )

    return run(seeds).numpy()


def test_augment_is_deterministic_per_seed():
    image = _coordinate_image()
    first = _augment_many(image, 8, 10, 0.5)
    again = _augment_many(image, 8, 10, 0.5)
    other = _augment_many(image, 8, 10, 0.5, first_seed=100)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (8, AH, AW, 3)
    assert not np.array_equal(first, other)
    # Different seeds within a run also give different outputs.
    assert len({out.tobytes() for out in first}) == 8


def test_augment_flip_and_crop_rates():
    out = _augment_many(_coordinate_image(), 300, pad=10, erase_prob=0.0)
    centre_r, centre_c = AH // 2, AW // 2
    flipped = out[:, centre_r, centre_c + 1, 1] < out[:, centre_r, centre_c, 1]
    assert 0.4 < flipped.mean() < 0.6
    dy = (out[:, centre_r, centre_c, 0] - 10) / 3 - centre_r
    col = (out[:, centre_r, centre_c, 1] - 10) / 6
    dx = np.where(flipped, (AW - 1 - col) - centre_c, col - centre_c)
    assert np.all(np.abs(dy) <= 10) and np.all(np.abs(dx) <= 10)
    assert np.mean((dy != 0) | (dx != 0)) > 0.9
    assert len(np.unique(dy)) >= 15 and abs(dy.mean()) < 2.5 and abs(dx.mean()) < 2.5
    # Padding is zero: a shifted crop shows black borders.
    shifted = out[np.abs(dy) >= 2]
    assert np.all(shifted.min(axis=(1, 2, 3)) == 0.0)


def test_augment_random_erasing_rate_area_and_fill():
    out = _augment_many(np.zeros((AH, AW, 3), np.float32), 300, pad=0, erase_prob=0.5)
    erased = np.all(out == MEAN, axis=-1)
    has_erase = erased.any(axis=(1, 2))
    assert 0.4 < has_erase.mean() < 0.6
    fractions = erased[has_erase].mean(axis=(1, 2))
    assert fractions.min() >= 0.015 and fractions.max() <= 0.45
    assert fractions.max() - fractions.min() > 0.15
    for mask in erased[has_erase][:20]:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == rows.size * cols.size  # a filled rectangle
    # Untouched pixels stay black; erased ones become 0 after torchvision normalisation.
    assert np.all(out[~erased] == 0.0)
    normalised = normalize_pixels(tf.constant(out[has_erase][:5]), "torch").numpy()
    np.testing.assert_allclose(normalised[erased[has_erase][:5]], 0.0, atol=1e-5)
