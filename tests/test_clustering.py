"""Tests of the pseudo-label engine: k-NN, sparse k-reciprocal Jaccard distance, DBSCAN, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from maskpre_tf.clustering.cluster import (
    camera_centered_features,
    cluster,
    cluster_dense_reference,
    cluster_statistics,
    relabel,
)
from maskpre_tf.clustering.jaccard import (
    encode_neighbourhoods,
    expand_reciprocal_sets,
    half_k,
    jaccard_distance,
    jaccard_distance_dense_reference,
    jaccard_from_encoding,
    k_reciprocal_sets,
    local_query_expansion,
)
from maskpre_tf.clustering.knn import as_unit_rows, knn_recall, knn_search, l2_normalize
from maskpre_tf.errors import UserError


def gaussian_mixture(
    n_ids: int = 40, d: int = 32, noise: float = 0.9, hard: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Identities of 2..29 samples around Gaussian centres; a ``hard`` fraction is 2.5x noisier.

    Centres come in look-alike pairs so that some identities overlap and DBSCAN has real
    decisions to make (merges, outliers), not only far-apart blobs.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 30, n_ids)
    base = rng.standard_normal((n_ids // 2 + 1, d))
    centres = base[np.arange(n_ids) // 2] + 0.8 * rng.standard_normal((n_ids, d))
    pid = np.repeat(np.arange(n_ids), sizes)
    scale = np.where(rng.random(len(pid)) < hard, 2.5 * noise, noise)
    x = centres[pid] + scale[:, None] * rng.standard_normal((len(pid), d))
    return x.astype(np.float32), pid


def to_dense(dist: sp.csr_array) -> np.ndarray:
    """Dense view of a sparse Jaccard matrix, with the unstored pairs at distance 1."""
    out = np.ones(dist.shape, dtype=np.float32)
    rows = np.repeat(np.arange(dist.shape[0]), np.diff(dist.indptr))
    out[rows, dist.indices] = dist.data
    return out


def row_sets(mat: sp.csr_array) -> list[set[int]]:
    return [
        set(mat.indices[mat.indptr[i] : mat.indptr[i + 1]].tolist()) for i in range(mat.shape[0])
    ]


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    return gaussian_mixture()


@pytest.fixture(scope="module")
def mixture_ranks(mixture) -> np.ndarray:
    return knn_search(mixture[0], 31, index="flat")[1]


# ---------------------------------------------------------------- k-NN


def test_exact_knn_matches_brute_force(mixture):
    x = l2_normalize(mixture[0])
    sims = x @ x.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :12]
    for kind in ("flat", "faiss_flat"):
        s, ids = knn_search(mixture[0], 12, index=kind)
        assert ids.shape == (len(x), 12) and ids.dtype == np.int64
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_allclose(s, np.take_along_axis(sims, expected, 1), atol=1e-5)
        assert np.all(np.diff(s, axis=1) <= 1e-6)


@pytest.mark.parametrize("tile", [7, 50, 128])
def test_symmetric_tiles_match_faiss(mixture, tile):
    # Shuffled rows, tiles smaller and larger than k: every tile pair and merge path is used.
    x = mixture[0][np.random.default_rng(5).permutation(len(mixture[0]))]
    s_ref, ids_ref = knn_search(x, 12, index="faiss_flat")
    s, ids = knn_search(x, 12, index="flat", tile=tile)
    np.testing.assert_array_equal(ids, ids_ref)
    np.testing.assert_allclose(s, s_ref, atol=1e-5)


def test_knn_clamps_k_and_handles_tiny_inputs():
    x = np.eye(3, 5, dtype=np.float32)
    s, ids = knn_search(x, 10)
    assert ids.shape == (3, 3)
    np.testing.assert_array_equal(ids[:, 0], [0, 1, 2])
    s, ids = knn_search(np.zeros((0, 4), np.float32), 5)
    assert ids.shape == (0, 0)


def test_ivf_knn_has_high_recall():
    x, _ = gaussian_mixture(n_ids=150, d=16, noise=0.5, seed=3)
    _, ids = knn_search(x, 11, index="ivf", nlist=16, nprobe=4, seed=0)
    assert ids.shape == (len(x), 11)
    assert np.all(ids[:, 0] == np.arange(len(x)))  # self is its own nearest neighbour
    assert knn_recall(x, ids, num_queries=300) >= 0.9


def test_as_unit_rows_copies_only_when_needed():
    x = l2_normalize(np.random.default_rng(0).standard_normal((5, 4)))
    assert as_unit_rows(x) is x
    y = 3 * x
    out = as_unit_rows(y)
    assert out is not y
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(y, 3 * x)  # input untouched


# ------------------------------------------------------ k-reciprocal rule, by hand


def line_ranks(points: list[float]) -> np.ndarray:
    """Neighbour ranks of 1-D points (nearest first, ties by index)."""
    p = np.asarray(points, dtype=float)
    return np.argsort(np.abs(p[:, None] - p[None, :]), axis=1, kind="stable")


def test_k_reciprocal_sets_by_hand():
    # Points at 0, 1, 3, 7.  N(i, 1): 0->{0,1}, 1->{1,0}, 2->{2,1}, 3->{3,2}.
    ranks = line_ranks([0, 1, 3, 7])
    assert row_sets(k_reciprocal_sets(ranks, 1)) == [{0, 1}, {0, 1}, {2}, {3}]
    # N(i, 2): 0->{0,1,2}, 1->{1,0,2}, 2->{2,1,0}, 3->{3,2,1}: 3 is nobody's neighbour.
    assert row_sets(k_reciprocal_sets(ranks, 2)) == [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3}]


def test_k_reciprocal_sets_ignore_missing_neighbours():
    ranks = np.array([[0, 1, -1], [1, 0, -1], [2, -1, -1]])
    assert row_sets(k_reciprocal_sets(ranks, 2)) == [{0, 1}, {0, 1}, {2}]


def bool_rows(sets: list[set[int]], n: int) -> sp.csr_array:
    dense = np.zeros((n, n), dtype=bool)
    for i, s in enumerate(sets):
        dense[i, sorted(s)] = True
    return sp.csr_array(dense)


def test_expansion_rule_by_hand():
    n = 8
    recip = bool_rows([{0, 1, 2}] + [set() for _ in range(n - 1)], n)
    half = [set() for _ in range(n)]
    half[0] = {0}  # inside: 1 > 2/3 -> adds nothing new
    half[1] = {1, 2, 5}  # overlap 2, not > 2/3 * 3 = 2 -> rejected
    half[2] = {2, 0, 1, 7}  # overlap 3 > 2/3 * 4 -> accepted, brings 7
    expanded = expand_reciprocal_sets(recip, bool_rows(half, n))
    assert row_sets(expanded)[0] == {0, 1, 2, 7}
    assert all(s == set() for s in row_sets(expanded)[1:])


def test_half_k_rounds_like_numpy():
    assert [half_k(k) for k in (30, 20, 5, 7, 1)] == [15, 10, 2, 4, 0]


def test_encoding_is_softmax_of_negative_distance():
    x = l2_normalize(np.array([[1, 0], [1, 1], [0, 1], [-1, 0.2]], dtype=np.float32))
    expanded = bool_rows([{0, 1, 2}, {1}, {1, 2}, set()], 4)
    v = encode_neighbourhoods(x, expanded).toarray()
    d = 2 - 2 * x @ x.T
    w = np.exp(-d[0, [0, 1, 2]])
    np.testing.assert_allclose(v[0, [0, 1, 2]], w / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(v[1], [0, 1, 0, 0])
    np.testing.assert_allclose(v.sum(axis=1), [1, 1, 1, 0], atol=1e-6)


def test_query_expansion_averages_neighbour_rows():
    v = sp.csr_array(np.array([[1, 0, 0], [0, 0.5, 0.5], [0, 0, 1]], dtype=np.float32))
    ranks = np.array([[0, 1, 2], [1, 2, 0], [2, -1, -1]])
    assert local_query_expansion(v, ranks, 1) is v
    w = local_query_expansion(v, ranks, 2).toarray()
    np.testing.assert_allclose(w, [[0.5, 0.25, 0.25], [0, 0.25, 0.75], [0, 0, 1]])


def test_jaccard_from_encoding_by_hand():
    w = sp.csr_array(
        np.array([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.float32)
    )
    dist = jaccard_from_encoding(w)
    # Rows 0, 1: sum(min) = 0.5, sum(max) = 1.5 -> 1 - 1/3.
    assert to_dense(dist)[0, 1] == pytest.approx(2 / 3, abs=1e-6)
    rows = [dict(zip(r.indices, r.data, strict=True)) for r in (dist[[i], :] for i in range(4))]
    assert 2 not in rows[0] and 3 not in rows[0]  # no overlap: not stored, i.e. distance 1
    # Identical rows 2 and 3: an explicit stored zero, which DBSCAN must see as a neighbour.
    assert rows[2] == {2: 0.0, 3: 0.0}


# ----------------------------------------------- sparse path == dense reference


@pytest.mark.parametrize("k1,k2", [(30, 6), (20, 1), (7, 3)])
def test_sparse_jaccard_equals_dense_reference(mixture, mixture_ranks, k1, k2):
    x = mixture[0]
    sparse = jaccard_distance(x, k1=k1, k2=k2, ranks=mixture_ranks)
    dense = jaccard_distance_dense_reference(x, k1=k1, k2=k2, ranks=mixture_ranks)
    stored = np.zeros(dense.shape, dtype=bool)
    rows = np.repeat(np.arange(len(x)), np.diff(sparse.indptr))
    stored[rows, sparse.indices] = True
    assert sparse.nnz < 0.9 * dense.size  # genuinely sparse
    np.testing.assert_array_equal(stored, dense < 1.0)  # stored exactly where pairs overlap
    np.testing.assert_allclose(to_dense(sparse), dense, atol=2e-5)


def test_small_blocks_give_the_same_matrix(mixture, mixture_ranks):
    x = mixture[0]
    big = jaccard_distance(x, ranks=mixture_ranks)
    small = jaccard_distance(x, ranks=mixture_ranks, max_triples=64)
    np.testing.assert_array_equal(big.indptr, small.indptr)
    np.testing.assert_array_equal(big.indices, small.indices)
    np.testing.assert_allclose(big.data, small.data, atol=1e-6)


def test_max_distance_and_distance_order(mixture, mixture_ranks):
    full = to_dense(jaccard_distance(mixture[0], ranks=mixture_ranks))
    pruned = jaccard_distance(
        mixture[0], ranks=mixture_ranks, max_distance=0.6, row_order="distance"
    )
    assert pruned.data.max() <= 0.6
    for i in range(pruned.shape[0]):
        row = pruned.data[pruned.indptr[i] : pruned.indptr[i + 1]]
        assert np.all(np.diff(row) >= 0)
    kept = to_dense(pruned)
    np.testing.assert_array_equal(kept <= 0.6, full <= 0.6)


@pytest.mark.parametrize("eps", [0.5, 0.6, 0.7])
def test_sparse_clusters_equal_dense_reference(mixture, mixture_ranks, eps):
    x, pid = mixture
    sparse = cluster(x, eps=eps)
    dense = cluster_dense_reference(x, eps=eps, ranks=mixture_ranks)
    stats = cluster_statistics(sparse, pid)
    # The data must make DBSCAN decide something: several clusters, some outliers.
    assert 10 <= stats["num_clusters"] < len(x) / 4
    assert adjusted_rand_score(sparse, dense) >= 0.99
    # Pairs at distance eps up to float rounding may fall either side; allow a handful.
    assert np.count_nonzero((sparse == -1) != (dense == -1)) <= 0.01 * len(x)


def test_labels_are_deterministic_and_numbered(mixture):
    a = cluster(mixture[0])
    b = cluster(mixture[0].copy())
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64
    found = a[a >= 0]
    assert set(found.tolist()) == set(range(found.max() + 1))
    first = [int(v) for v in dict.fromkeys(found.tolist())]
    assert first == list(range(len(first)))  # numbered by first appearance


def test_relabel():
    np.testing.assert_array_equal(relabel(np.array([5, 5, -1, 2, 5, 7])), [0, 0, -1, 1, 0, 2])
    np.testing.assert_array_equal(relabel(np.array([-1, -1])), [-1, -1])


# --------------------------------------------------- edge cases and camera option


def test_all_outliers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 64)).astype(np.float32)
    labels = cluster(x, eps=0.01)
    np.testing.assert_array_equal(labels, -1)
    stats = cluster_statistics(labels)
    assert stats["num_clusters"] == 0 and stats["num_outliers"] == 50 and stats["largest"] == 0
    np.testing.assert_array_equal(cluster(x[:3]), [-1, -1, -1])  # fewer than min_samples
    np.testing.assert_array_equal(cluster(x[:1]), [-1])
    assert cluster(x[:0]).shape == (0,)
    assert cluster_statistics(np.empty(0, np.int64))["num_clusters"] == 0


def test_single_cluster():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(32) + 0.05 * rng.standard_normal((40, 32))).astype(np.float32)
    labels = cluster(x)
    np.testing.assert_array_equal(labels, 0)
    stats = cluster_statistics(labels, np.zeros(40, int))
    assert stats["num_clusters"] == 1 and stats["largest"] == 40
    assert stats["pairwise_precision"] == 1.0 and stats["pairwise_recall"] == 1.0


def test_exact_duplicates_stay_together():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 16)).astype(np.float32)
    x[10:16] = x[10]  # six identical images
    dist = jaccard_distance(x, k1=10, k2=3)
    dense = to_dense(dist)
    assert np.all(dense[10:16, 10:16] <= 1e-6)
    labels = cluster(x, k1=10, k2=3, eps=0.3)
    assert labels[10] >= 0 and np.all(labels[10:16] == labels[10])


def test_camera_centering_separates_identities_from_cameras():
    rng = np.random.default_rng(0)
    n_ids, n_cams, per, d = 30, 3, 4, 32
    centres = l2_normalize(rng.standard_normal((n_ids, d)))
    offsets = l2_normalize(rng.standard_normal((n_cams, d)))
    pid = np.repeat(np.arange(n_ids), n_cams * per)
    cam = np.tile(np.repeat(np.arange(n_cams), per), n_ids)
    x = centres[pid] + 2.0 * offsets[cam] + 0.05 * rng.standard_normal((len(pid), d))
    plain = cluster_statistics(cluster(x.astype(np.float32)), pid)
    aware = cluster_statistics(cluster(x.astype(np.float32), camids=cam), pid)
    assert plain["ari"] < 0.3
    assert aware["ari"] > 0.9
    centred = camera_centered_features(x, cam)
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1, atol=1e-5)


# ------------------------------------------------------------- statistics


def test_statistics_by_hand():
    labels = np.array([0, 0, 1, 1, -1, 2])
    pids = np.array([0, 0, 0, 1, 1, -1])  # the last sample's identity is unknown
    stats = cluster_statistics(labels, pids)
    assert stats["num_clusters"] == 3 and stats["num_outliers"] == 1
    assert stats["largest"] == 2 and stats["smallest"] == 1 and stats["median_size"] == 2.0
    assert stats["num_scored"] == 5
    # Predicted pairs: (0,1), (2,3); true pairs: (0,1), (0,2), (1,2), (3,4); shared: (0,1).
    assert stats["pairwise_precision"] == pytest.approx(1 / 2)
    assert stats["pairwise_recall"] == pytest.approx(1 / 4)
    assert stats["pairwise_f1"] == pytest.approx(1 / 3)
    assert json.loads(json.dumps(stats)) == stats


def test_statistics_scores_track_quality(mixture):
    x, pid = mixture
    good = cluster_statistics(pid, pid)
    assert good["nmi"] == pytest.approx(1.0) and good["ari"] == pytest.approx(1.0)
    shuffled = cluster_statistics(np.random.default_rng(0).permutation(pid), pid)
    assert shuffled["ari"] < 0.05 and shuffled["pairwise_precision"] < 0.2


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda: cluster(np.ones(5, np.float32)),
        lambda: cluster(np.full((5, 3), np.nan, np.float32)),
        lambda: cluster(np.ones((5, 3), np.float32), eps=1.0),
        lambda: cluster(np.ones((5, 3), np.float32), min_samples=0),
        lambda: cluster(np.ones((5, 3), np.float32), camids=np.zeros(4, int)),
        lambda: jaccard_distance(np.ones((5, 3), np.float32), k1=0),
        lambda: jaccard_distance(np.ones((5, 3), np.float32), ranks=np.zeros((5, 2), int)),
        lambda: knn_search(np.ones((5, 3), np.float32), 2, index="hnsw"),
        lambda: cluster_statistics(np.zeros(3, int), np.zeros(4, int)),
    ],
)
def test_user_errors(call):
    with pytest.raises(UserError):
        call()
