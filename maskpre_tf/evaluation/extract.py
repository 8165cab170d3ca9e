"""Feature extraction for a dataset split and the query/gallery evaluation built on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from maskpre_tf.data.datasets import Record
from maskpre_tf.data.decoded import pixel_batches
from maskpre_tf.data.pipeline import make_eval_dataset
from maskpre_tf.evaluation.distance import distance_blocks
from maskpre_tf.evaluation.ranking import evaluate_rank_blocks
from maskpre_tf.evaluation.rerank import re_ranked_blocks


def extract_features(
    embed: Callable[[tf.Tensor], tf.Tensor],
    images: Sequence[str] | np.ndarray,
    height: int,
    width: int,
    batch_size: int = 128,
    flip: bool = False,
) -> np.ndarray:
    """Embeddings of the images, in order.

    Args:
      embed: maps RGB pixels float32 [b, H, W, 3] in 0–255 to embeddings [b, D] (e.g. a
        ``tf.function`` around the teacher encoder).
      images: image files, or crops already decoded at height × width (uint8 [N, H, W, 3],
        :func:`maskpre_tf.data.decoded.decode_images`).
      height, width: input size in pixels.
      batch_size: images per forward pass.
      flip: average with the embedding of the horizontally flipped image (test-time flip).
    Returns:
      float32 [N, D], rows L2-normalised.
    """
    if isinstance(images, np.ndarray):
        batches = pixel_batches(images, batch_size)
    else:
        batches = make_eval_dataset(images, height, width, batch_size)
    chunks = []
    for pixels in batches:
        emb = embed(pixels)
        if flip:
            emb = emb + embed(tf.reverse(pixels, axis=[2]))
        chunks.append(tf.math.l2_normalize(tf.cast(emb, tf.float32), axis=-1).numpy())
    if not chunks:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(chunks, axis=0)


def evaluate_features(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query: Sequence[Record],
    gallery: Sequence[Record],
    rerank: bool = False,
) -> dict[str, float]:
    """Market-1501 protocol metrics for given features.

    Args:
      query_features: float32 [Nq, D] L2-normalised.
      gallery_features: float32 [Ng, D] L2-normalised.
      query, gallery: their records (pids, camids).
      rerank: apply k-reciprocal re-ranking (k1 20, k2 6, λ 0.3) to the cosine distances.
    Returns:
      {"mAP", "rank1", "rank5", "rank10"} as fractions in [0, 1].
    """
    return rank_metrics(*rank_features(query_features, gallery_features, query, gallery, rerank))


def rank_features(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    query: Sequence[Record],
    gallery: Sequence[Record],
    rerank: bool = False,
) -> tuple[np.ndarray, float]:
    """The CMC curve and mAP of given features (Market-1501 protocol).

    Args: as :func:`evaluate_features`.
    Returns:
      ``(cmc, mAP)``: cmc float32 [min(50, Ng)], ``cmc[k]`` the fraction of queries whose first
      correct match is at rank <= k + 1; mAP a float in [0, 1].

    Distances are computed and scored one block of queries at a time: no [Nq, Ng] matrix (nor,
    with re-ranking, any [Nq + Ng]^2 one) is held.
    """
    q_pids = np.array([r.pid for r in query])
    g_pids = np.array([r.pid for r in gallery])
    q_cams = np.array([r.camid for r in query])
    g_cams = np.array([r.camid for r in gallery])
    if rerank:
        blocks = re_ranked_blocks(query_features, gallery_features)
    else:
        blocks = distance_blocks(query_features, gallery_features)
    return evaluate_rank_blocks(blocks, q_pids, g_pids, q_cams, g_cams)


def rank_metrics(cmc: np.ndarray, mean_ap: float) -> dict[str, float]:
    """{"mAP", "rank1", "rank5", "rank10"} (fractions in [0, 1]) of a CMC curve [>= 10] and mAP."""
    return {
        "mAP": float(mean_ap),
        "rank1": float(cmc[0]),
        "rank5": float(cmc[4]),
        "rank10": float(cmc[9]),
    }


def evaluate_model(
    embed: Callable[[tf.Tensor], tf.Tensor],
    query: Sequence[Record],
    gallery: Sequence[Record],
    height: int,
    width: int,
    batch_size: int = 128,
    rerank: bool = False,
) -> dict[str, float]:
    """Extract query and gallery features with ``embed`` and evaluate them."""
    qf = extract_features(embed, [r.path for r in query], height, width, batch_size)
    gf = extract_features(embed, [r.path for r in gallery], height, width, batch_size)
    return evaluate_features(qf, gf, query, gallery, rerank=rerank)
