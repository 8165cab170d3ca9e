"""Tests of re-ranking's working distance: sources, tiles and the exact neighbour search."""

from __future__ import annotations

import numpy as np
import pytest

from maskpre_tf.evaluation import working_distance as wd
from maskpre_tf.evaluation.distance import pairwise_distance, prepare


def stacked(qg: np.ndarray, qq: np.ndarray, gg: np.ndarray) -> np.ndarray:
    """torchreid's ``D = [[q_q, q_g], [q_g^T, g_g]]``."""
    return np.block([[qq, qg], [qg.T, gg]])


def stable_neighbours(d_t: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: rows of ``D^T`` squared, divided by their max, stable argsort."""
    sq = d_t.astype(np.float32) ** 2
    peak = sq.max(axis=1)
    peak[peak <= 0] = 1
    return np.argsort(sq / peak[:, None], axis=1, kind="stable")[:, :depth], peak


def grid_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer points: exact squared-Euclidean distances, with many ties and duplicates."""
    rng = np.random.default_rng(seed)
    nq, ng = rng.integers(3, 40), rng.integers(5, 90)
    f = rng.integers(-2, 3, size=(nq + ng, 3)).astype(np.float32)
    return f[:nq], f[nq:]


def test_smallest_columns_breaks_ties_by_column():
    block = np.array([[3, 1, 2, 1, 0], [5, 5, 5, 5, 5]], dtype=np.float32)
    np.testing.assert_array_equal(wd.smallest_columns(block, 3), [[4, 1, 3], [0, 1, 2]])
    np.testing.assert_array_equal(wd.smallest_columns(block, 5)[0], [4, 1, 3, 2, 0])


def test_spans_never_cross_the_query_gallery_cut():
    assert wd.spans(5, 7, 3) == [(0, 3), (3, 5), (5, 8), (8, 11), (11, 12)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("edge", [4, 7, 1000])
def test_feature_search_equals_a_stable_sort(seed, edge, monkeypatch):
    q, g = grid_case(seed)
    src = wd.FeatureDistances(prepare(q, "euclidean"), prepare(g, "euclidean"))
    whole = pairwise_distance(np.vstack((q, g)), np.vstack((q, g)), metric="euclidean")
    original, redone = wd.smallest_columns, []

    def spy(block: np.ndarray, k: int) -> np.ndarray:
        redone.append(len(block))
        return original(block, k)

    monkeypatch.setattr(wd, "smallest_columns", spy)
    for depth in (1, 5, 21):
        ranks, peak = wd.nearest_neighbours(src, depth, edge=edge)
        want, want_peak = stable_neighbours(whole, depth)
        np.testing.assert_array_equal(ranks, want)
        np.testing.assert_array_equal(peak, want_peak)
    assert redone  # ties at the cut: some rows were re-done from their full row


@pytest.mark.parametrize("edge", [5, 1000])
def test_matrix_search_reads_columns_of_the_stacked_matrix(edge):
    rng = np.random.default_rng(3)
    qg = rng.integers(0, 6, (9, 14)).astype(np.float32)
    qq = rng.integers(0, 6, (9, 9)).astype(np.float32)  # not symmetric: columns count
    gg = rng.integers(0, 6, (14, 14)).astype(np.float32)
    copies = [m.copy() for m in (qg, qq, gg)]
    src = wd.MatrixDistances(qg, qq, gg)
    ranks, peak = wd.nearest_neighbours(src, 8, edge=edge)
    want, want_peak = stable_neighbours(stacked(qg, qq, gg).T, 8)
    np.testing.assert_array_equal(ranks, want)
    np.testing.assert_array_equal(peak, want_peak)
    for m, c in zip((qg, qq, gg), copies, strict=True):
        np.testing.assert_array_equal(m, c)  # the inputs are never written to


def test_sources_give_tiles_and_pairs_of_the_transposed_stack():
    rng = np.random.default_rng(1)
    qg, qq, gg = (rng.random(s).astype(np.float32) for s in ((4, 6), (4, 4), (6, 6)))
    d_t = stacked(qg, qq, gg).T
    src = wd.MatrixDistances(qg, qq, gg)
    for rows in [(0, 4), (1, 3), (4, 10), (6, 9)]:
        for cols in [(0, 4), (2, 3), (4, 10), (5, 7)]:
            np.testing.assert_array_equal(src.tile(rows, cols), d_t[slice(*rows), slice(*cols)])
    r, c = np.array([0, 5, 6, 2, 9]), np.array([7, 1, 3, 9, 9])
    np.testing.assert_array_equal(src.pairs(r, c), d_t[r, c])
    f = rng.normal(size=(10, 3)).astype(np.float32)
    fsrc = wd.FeatureDistances(prepare(f[:4]), prepare(f[4:]))
    whole = pairwise_distance(f, f)
    np.testing.assert_allclose(fsrc.tile((4, 10), (0, 4)), whole[4:, :4], atol=1e-6)
    np.testing.assert_allclose(fsrc.pairs(r, c), whole[r, c], atol=1e-6)
