"""Tests of the pseudo-label engine: k-NN, sparse k-reciprocal Jaccard distance, DBSCAN, stats.

The k-reciprocal steps themselves are tested in test_kreciprocal.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from reference_jaccard import cluster_dense, jaccard_distance_dense
from sklearn.metrics import adjusted_rand_score

from maskpre_tf.clustering.cluster import (
    camera_centered_features,
    cluster_statistics,
    jaccard_graph,
    pseudo_labels,
)
from maskpre_tf.clustering.dbscan import dbscan_labels, relabel
from maskpre_tf.clustering.jaccard import DEFAULT_CONVENTION, jaccard_distance
from maskpre_tf.clustering.knn import as_unit_rows, knn_recall, knn_search, l2_normalize
from maskpre_tf.config import ClusteringConfig
from maskpre_tf.errors import UserError


def cluster(
    x: np.ndarray,
    eps: float = 0.6,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    camids: np.ndarray | None = None,
    convention: str = DEFAULT_CONVENTION,
) -> np.ndarray:
    """Labels at a fixed eps: training's entry point, or its two steps for another convention."""
    if convention == DEFAULT_CONVENTION:
        cfg = ClusteringConfig(eps, 0.0, min_samples, k1, k2, camera_aware=camids is not None)
        return pseudo_labels(x, cfg, camids).labels
    graph = jaccard_graph(x, eps, k1, k2, camids, convention=convention)
    return dbscan_labels(graph, eps, min_samples)


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


# ----------------------------------------------- sparse path == dense reference


def test_default_convention_is_cluster_contrasts():
    assert DEFAULT_CONVENTION == "cluster_contrast"


@pytest.mark.parametrize("convention", ["cluster_contrast", "zhong"])
@pytest.mark.parametrize("k1,k2", [(30, 6), (20, 1), (7, 3)])
def test_sparse_jaccard_equals_dense_reference(mixture, mixture_ranks, k1, k2, convention):
    x = mixture[0]
    sparse = jaccard_distance(x, k1=k1, k2=k2, ranks=mixture_ranks, convention=convention)
    dense = jaccard_distance_dense(x, k1=k1, k2=k2, ranks=mixture_ranks, convention=convention)
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


@pytest.mark.parametrize("convention", ["cluster_contrast", "zhong"])
@pytest.mark.parametrize("eps", [0.5, 0.6, 0.7])
def test_sparse_clusters_equal_dense_reference(mixture, mixture_ranks, eps, convention):
    x, pid = mixture
    sparse = cluster(x, eps=eps, convention=convention)
    dense = cluster_dense(x, eps=eps, ranks=mixture_ranks, convention=convention)
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
        lambda: jaccard_distance(np.ones((5, 3), np.float32), convention="torchreid"),
        lambda: jaccard_distance(np.ones((5, 3), np.float32), row_order="random"),
        lambda: cluster(np.ones((5, 3), np.float32), convention="torchreid"),
        lambda: knn_search(np.ones((5, 3), np.float32), 2, index="hnsw"),
        lambda: cluster_statistics(np.zeros(3, int), np.zeros(4, int)),
    ],
)
def test_user_errors(call):
    with pytest.raises(UserError):
        call()
