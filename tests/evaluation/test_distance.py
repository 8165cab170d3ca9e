"""Tests of embedding distances: whole matrices, blocks of rows, single pairs."""

from __future__ import annotations

import numpy as np
import pytest

from maskpre_tf.evaluation import distance
from maskpre_tf.evaluation.distance import (
    block_distances,
    distance_blocks,
    pair_distances,
    pairwise_distance,
    prepare,
)


@pytest.fixture()
def embeddings() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(17, 5)).astype(np.float32)
    g = rng.normal(size=(23, 5)).astype(np.float32)
    g[3] = 0.0  # zero vector: cosine distance 1 to every query
    return q, g


def test_pairwise_distance_matches_direct_formulas(embeddings, monkeypatch):
    q, g = embeddings
    monkeypatch.setattr(distance, "_CHUNK_ELEMENTS", 4 * 23)  # several row blocks
    sq = pairwise_distance(q, g, metric="euclidean")
    direct = ((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(-1)
    assert sq.dtype == np.float32 and sq.shape == (17, 23)
    np.testing.assert_allclose(sq, direct, rtol=1e-5, atol=1e-5)
    cos = pairwise_distance(q, g, metric="cosine")
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(cos, 1.0 - qn @ gn.T, atol=1e-6)
    np.testing.assert_allclose(cos[:, 3], 1.0)
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(q, g, metric="manhattan")
    with pytest.raises(ValueError, match=r"\[Nq, D\]"):
        pairwise_distance(q, g[:, :4])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_blocks_and_pairs_agree_with_the_matrix(embeddings, metric, monkeypatch):
    q, g = embeddings
    whole = pairwise_distance(q, g, metric=metric)
    monkeypatch.setattr(distance, "_CHUNK_ELEMENTS", 5 * 23)
    blocks = list(distance_blocks(q, g, metric=metric))
    assert len(blocks) == 4 and all(b.shape[1] == 23 for b in blocks)
    np.testing.assert_array_equal(np.vstack(blocks), whole)
    a, b = prepare(q, metric), prepare(g, metric)
    np.testing.assert_array_equal(block_distances(a.rows(2, 9), b), whole[2:9])
    rows = np.array([0, 16, 4, 4])
    cols = np.array([22, 3, 0, 7])
    np.testing.assert_allclose(pair_distances(a, b, rows, cols), whole[rows, cols], atol=1e-6)
