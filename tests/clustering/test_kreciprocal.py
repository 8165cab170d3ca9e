"""Tests of the k-reciprocal core: sets, expansion, encoding, query expansion, Jaccard."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from reference_jaccard import jaccard_rows

from maskpre_tf import kreciprocal as kr
from maskpre_tf.clustering.knn import knn_search, l2_normalize
from maskpre_tf.errors import UserError


def row_sets(mat: sp.csr_array) -> list[set[int]]:
    return [
        set(mat.indices[mat.indptr[i] : mat.indptr[i + 1]].tolist()) for i in range(mat.shape[0])
    ]


def bool_rows(sets: list[set[int]], n: int) -> sp.csr_array:
    dense = np.zeros((n, n), dtype=bool)
    for i, s in enumerate(sets):
        dense[i, sorted(s)] = True
    return sp.csr_array(dense)


def line_ranks(points: list[float]) -> np.ndarray:
    """Neighbour ranks of 1-D points (nearest first, ties by index)."""
    p = np.asarray(points, dtype=float)
    return np.argsort(np.abs(p[:, None] - p[None, :]), axis=1, kind="stable")


def all_pairs(w: sp.csr_array, **kwargs) -> np.ndarray:
    """Dense Jaccard matrix (1 where not produced) of ``w`` against itself, mirrored."""
    out = np.ones(w.shape, dtype=np.float32)
    for rows, cols, dist in kr.jaccard_blocks(w, kr.column_index(w), within=True, **kwargs):
        out[rows, cols] = dist
        out[cols, rows] = dist
    return out


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 32))
    x = centres[rng.integers(0, 30, 600)] + 0.7 * rng.standard_normal((600, 32))
    return l2_normalize(x)


def cosine_pair_distance(x: np.ndarray):
    def pair_distance(rows, cols):
        return 2.0 - 2.0 * kr.pair_dots(x, x, rows, cols).astype(np.float64)

    return pair_distance


# ------------------------------------------------------------------ conventions


def test_conventions_set_the_neighbourhood_sizes():
    assert kr.neighbourhood_sizes(30, "zhong") == (31, 16)
    assert kr.neighbourhood_sizes(30, "cluster_contrast") == (30, 16)
    assert kr.neighbourhood_sizes(20, "zhong") == (21, 11)
    assert kr.neighbourhood_sizes(1, "cluster_contrast") == (1, 1)
    # cluster-contrast's lists hold k1 entries: everything, query expansion too, is cut there.
    assert kr.list_depth(30, 6, "cluster_contrast") == 30
    assert kr.list_depth(4, 6, "cluster_contrast") == 4
    assert kr.list_depth(30, 6, "zhong") == 31
    assert kr.list_depth(3, 50, "zhong") == 50


def test_half_k_rounds_like_numpy():
    assert [kr.half_k(k) for k in (30, 20, 5, 7, 1)] == [15, 10, 2, 4, 0]


@pytest.mark.parametrize("k1, k2, convention", [(0, 6, "zhong"), (30, 0, "zhong"), (30, 6, "x")])
def test_bad_parameters_are_user_errors(k1, k2, convention):
    with pytest.raises(UserError):
        kr.check_parameters(k1, k2, convention)


def test_cluster_contrast_ignores_list_entries_beyond_k1(features):
    ranks = knn_search(features, 40, index="flat")[1]
    dist = cosine_pair_distance(features)
    full = kr.k_reciprocal_encoding(ranks, dist, 12, 6, "cluster_contrast")
    cut = kr.k_reciprocal_encoding(ranks[:, :12], dist, 12, 6, "cluster_contrast")
    assert (full != cut).nnz == 0
    zhong = kr.k_reciprocal_encoding(ranks, dist, 12, 6, "zhong")
    assert (full != zhong).nnz > 0  # k1 + 1 neighbours are a different encoding


# ------------------------------------------------------ the steps, by hand


def test_reciprocal_sets_by_hand():
    # Points at 0, 1, 3, 7.  N(i) of size 2: 0->{0,1}, 1->{1,0}, 2->{2,1}, 3->{3,2}.
    ranks = line_ranks([0, 1, 3, 7])
    assert row_sets(kr.reciprocal_sets(ranks, 2)) == [{0, 1}, {0, 1}, {2}, {3}]
    # Size 3: 0->{0,1,2}, 1->{1,0,2}, 2->{2,1,0}, 3->{3,2,1}: 3 is nobody's neighbour.
    assert row_sets(kr.reciprocal_sets(ranks, 3)) == [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3}]


def test_reciprocal_sets_ignore_missing_neighbours():
    ranks = np.array([[0, 1, -1], [1, 0, -1], [2, -1, -1]])
    assert row_sets(kr.reciprocal_sets(ranks, 3)) == [{0, 1}, {0, 1}, {2}]


def test_expansion_rule_by_hand():
    n = 8
    recip = bool_rows([{0, 1, 2}] + [set() for _ in range(n - 1)], n)
    half = [set() for _ in range(n)]
    half[0] = {0}  # inside: 1 > 2/3 -> adds nothing new
    half[1] = {1, 2, 5}  # overlap 2, not > 2/3 * 3 = 2 -> rejected
    half[2] = {2, 0, 1, 7}  # overlap 3 > 2/3 * 4 -> accepted, brings 7
    expanded = kr.expand_reciprocal_sets(recip, bool_rows(half, n))
    assert row_sets(expanded)[0] == {0, 1, 2, 7}
    assert all(s == set() for s in row_sets(expanded)[1:])


def test_encoding_is_softmax_of_negative_distance():
    x = l2_normalize(np.array([[1, 0], [1, 1], [0, 1], [-1, 0.2]], dtype=np.float32))
    expanded = bool_rows([{0, 1, 2}, {1}, {1, 2}, set()], 4)
    v = kr.encode(expanded, cosine_pair_distance(x)).toarray()
    d = 2 - 2 * x @ x.T
    w = np.exp(-d[0, [0, 1, 2]])
    np.testing.assert_allclose(v[0, [0, 1, 2]], w / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(v[1], [0, 1, 0, 0])
    np.testing.assert_allclose(v.sum(axis=1), [1, 1, 1, 0], atol=1e-6)


def test_query_expansion_averages_neighbour_rows():
    v = sp.csr_array(np.array([[1, 0, 0], [0, 0.5, 0.5], [0, 0, 1]], dtype=np.float32))
    ranks = np.array([[0, 1, 2], [1, 2, 0], [2, -1, -1]])
    assert kr.local_query_expansion(v, ranks, 1) is v
    w = kr.local_query_expansion(v, ranks, 2).toarray()
    np.testing.assert_allclose(w, [[0.5, 0.25, 0.25], [0, 0.25, 0.75], [0, 0, 1]])


def test_jaccard_by_hand():
    w = sp.csr_array(
        np.array([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.float32)
    )
    triples = list(kr.jaccard_blocks(w, kr.column_index(w), within=True))
    rows, cols, dist = (np.concatenate(t) for t in zip(*triples, strict=True))
    pairs = {(int(r), int(c)): float(d) for r, c, d in zip(rows, cols, dist, strict=True)}
    # Only pairs j >= i that share a column; rows 0, 1: min-sum 0.5 -> 1 - 0.5 / 1.5.
    assert set(pairs) == {(0, 0), (0, 1), (1, 1), (2, 2), (2, 3), (3, 3)}
    assert pairs[(0, 1)] == pytest.approx(2 / 3, abs=1e-6)
    # Identical rows 2 and 3: distance exactly 0 (a real neighbour for DBSCAN).
    assert pairs[(2, 3)] == 0.0 and pairs[(0, 0)] == 0.0


# ----------------------------------------------- whole pipeline == dense rows


@pytest.mark.parametrize("convention", ["zhong", "cluster_contrast"])
@pytest.mark.parametrize("k1, k2", [(30, 6), (20, 1), (7, 3)])
def test_encoding_and_jaccard_equal_the_dense_reference(features, convention, k1, k2):
    ranks = knn_search(features, 31, index="flat")[1]
    w = kr.k_reciprocal_encoding(ranks, cosine_pair_distance(features), k1, k2, convention)
    got = all_pairs(w)
    x = features
    want = jaccard_rows(ranks, lambda i, js: 2.0 - 2.0 * (x[js] @ x[i]), k1, k2, convention)
    np.testing.assert_array_equal(got < 1, want < 1)  # produced exactly where rows overlap
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert (got < 1).mean() < 0.75  # genuinely sparse


def test_small_blocks_give_the_same_result(features):
    ranks = knn_search(features, 31, index="flat")[1]
    dist = cosine_pair_distance(features)
    big = kr.k_reciprocal_encoding(ranks, dist, 30, 6, "zhong")
    small = kr.k_reciprocal_encoding(ranks, dist, 30, 6, "zhong", max_triples=64)
    assert abs(big - small).max() <= 1e-7
    np.testing.assert_allclose(all_pairs(big), all_pairs(big, max_triples=50), atol=1e-7)


def test_rows_against_another_encoding_equal_the_within_result(features):
    ranks = knn_search(features, 31, index="flat")[1]
    w = kr.k_reciprocal_encoding(ranks, cosine_pair_distance(features), 20, 6, "zhong")
    within = all_pairs(w)
    a, b = w[40:90], w[420:]
    between = np.ones((a.shape[0], b.shape[0]), dtype=np.float32)
    for rows, cols, dist in kr.jaccard_blocks(a, kr.column_index(b), max_triples=300):
        between[rows, cols] = dist
    np.testing.assert_allclose(between, within[40:90, 420:], atol=1e-7)
    with pytest.raises(ValueError, match="within"):
        next(kr.jaccard_blocks(a, kr.column_index(b), within=True))
