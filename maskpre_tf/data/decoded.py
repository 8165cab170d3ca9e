"""Crops decoded once and kept in memory: 8-bit RGB at the input size.

Clustering embeds every training image at the start of every epoch. Decoding the same JPEG
files again each time costs a share of that extraction, and the decode threads compete with the
forward pass for the cores (on a 2-core machine the same extraction of Market-1501's 12,936
crops took 11.2–12.0 s in four rounds and 20.6 s in a fifth; from memory 9.8–10.6 s in all
five). The crops are decoded and resized by the evaluation pipeline once, rounded to 8 bits —
what a PIL-based loader holds — and served from memory afterwards: exact for crops already at
the input size, within half a grey level per channel for resized ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf.data.pipeline import make_eval_dataset


def decoded_mib(count: int, height: int, width: int) -> float:
    """Memory, in MiB, of ``count`` decoded RGB crops of height × width at 8 bits."""
    return count * height * width * 3 / 2**20


def decode_images(
    paths: Sequence[str], height: int, width: int, batch_size: int = 512
) -> np.ndarray:
    """Decode and resize the images at ``paths`` (the evaluation pipeline), rounded to 8 bits.

    Args:
      paths: image files (an unreadable one raises, as in evaluation).
      height, width: output size in pixels.
      batch_size: images decoded per pipeline batch.

    Returns:
      uint8 [N, height, width, 3] RGB, row i from ``paths[i]``.
    """
    out = np.empty((len(paths), height, width, 3), np.uint8)
    row = 0
    for images in make_eval_dataset(paths, height, width, batch_size):
        batch = tf.cast(tf.round(images), tf.uint8).numpy()
        out[row : row + len(batch)] = batch
        row += len(batch)
    return out


def pixel_batches(images: np.ndarray, batch_size: int) -> Iterator[tf.Tensor]:
    """Batches of decoded crops as the pipelines deliver them.

    Args:
      images: uint8 [N, H, W, 3] from :func:`decode_images`.
      batch_size: rows per batch; the last batch keeps the remainder.

    Yields:
      float32 [b, H, W, 3] RGB in 0–255, in row order.
    """
    for start in range(0, len(images), batch_size):
        yield tf.cast(tf.constant(images[start : start + batch_size]), tf.float32)
