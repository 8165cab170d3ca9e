"""Dense reference implementations of the k-reciprocal Jaccard distance, for tests and benchmarks.

Nothing here is part of the package. Each function needs ``O(N^2)`` memory:

* :func:`jaccard_rows`: the textbook row-by-row formulation (per-row k-reciprocal sets, a dense
  ``N x N`` float32 encoding, dense query expansion, an inverted index built column by column,
  ``1 - m / (2 - m)``), the structure of the widely used ``compute_jaccard_distance`` and of the
  authors' ``re_ranking``, in either neighbourhood convention, written from the formulas of
  Zhong et al. (CVPR 2017). Conventions: ``"zhong"`` reads ``k1 + 1`` and ``round(k1 / 2) + 1``
  neighbours (self included) from full neighbour lists; ``"cluster_contrast"`` cuts every list at
  ``k1`` entries first, as cluster-contrast's faiss search returns ``k1`` neighbours.
* :func:`jaccard_distance_dense` and :func:`cluster_dense`: pseudo labels from it (all samples
  against all, original distance ``2 - 2 cos``; DBSCAN on the dense matrix), the baseline that
  ``benchmarks/cluster_bench.py`` times and compares against.

The re-ranking references built on :func:`jaccard_rows` are in ``reference_rerank.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.cluster import DBSCAN

from maskpre_tf.clustering.dbscan import relabel
from maskpre_tf.clustering.knn import as_unit_rows, check_features, knn_search


def neighbourhood_sizes(k1: int, convention: str) -> tuple[int, int]:
    """``(|N(i, k1)|, |N(c, round(k1 / 2))|)`` before any cut of the lists."""
    if convention not in ("zhong", "cluster_contrast"):
        raise ValueError(f"unknown convention {convention!r}")
    return k1 + 1, int(np.around(k1 / 2)) + 1


def jaccard_rows(
    ranks: np.ndarray,
    pair_distance: Callable[[int, np.ndarray], np.ndarray],
    k1: int,
    k2: int,
    convention: str,
    rows: Sequence[int] | None = None,
) -> np.ndarray:
    """Dense k-reciprocal Jaccard distances of ``rows`` against all ``N`` samples.

    Args:
      ranks: ``[N, K]`` int64 neighbour ids, nearest first (no missing entries).
      pair_distance: ``pair_distance(i, js)`` = original distances from ``i`` to the ids ``js``.
      k1, k2: neighbourhood and query-expansion sizes.
      convention: ``"zhong"`` or ``"cluster_contrast"``.
      rows: the rows wanted (default all).

    Returns:
      ``[len(rows), N]`` float32 distances in ``[0, 1]``.
    """
    n = ranks.shape[0]
    size, size_half = neighbourhood_sizes(k1, convention)
    if convention == "cluster_contrast":
        ranks = ranks[:, :k1]

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = ranks[i, :k]
        backward = ranks[forward, :k]
        return forward[np.where(backward == i)[0]]

    nn_k1 = [reciprocal(i, size) for i in range(n)]
    nn_half = [reciprocal(i, size_half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        base = nn_k1[i]
        expansion = base
        for cand in base:
            cand_set = nn_half[cand]
            if len(np.intersect1d(cand_set, base)) > 2.0 / 3.0 * len(cand_set):
                expansion = np.append(expansion, cand_set)
        expansion = np.unique(expansion)
        dist = np.asarray(pair_distance(i, expansion), dtype=np.float64)
        weights = np.exp(-(dist - dist.min()))
        v[i, expansion] = weights / weights.sum()
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i, :] = np.mean(v[ranks[i, :k2], :], axis=0)
        v = v_qe
        del v_qe
    rows = range(n) if rows is None else rows
    inv_index = [np.where(v[:, h] != 0)[0] for h in range(n)]
    jac = np.zeros((len(rows), n), dtype=np.float32)
    for out, i in enumerate(rows):
        temp_min = np.zeros(n, dtype=np.float32)
        for h in np.where(v[i, :] != 0)[0]:
            members = inv_index[h]
            temp_min[members] += np.minimum(v[i, h], v[members, h])
        jac[out] = 1.0 - temp_min / (2.0 - temp_min)
    jac[jac < 0] = 0.0
    return jac


def jaccard_distance_dense(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    ranks: np.ndarray | None = None,
    convention: str = "cluster_contrast",
) -> np.ndarray:
    """``[N, N]`` float32 Jaccard distances between all samples, original distance ``2 - 2 cos``.

    ``ranks`` (``[N, >= k1 + 1]`` exact neighbour ids of the normalised features) is computed
    with ``faiss.knn``, as the dense implementations do, when None. Needs about ``3 N^2 * 4`` B.
    """
    x = as_unit_rows(check_features(features))
    n = x.shape[0]
    if ranks is None:
        _, ranks = knn_search(x, min(max(k1 + 1, k2), n), index="faiss_flat", normalize=False)
    return jaccard_rows(ranks, lambda i, js: 2.0 - 2.0 * (x[js] @ x[i]), k1, k2, convention)


def cluster_dense(
    features: np.ndarray,
    eps: float = 0.6,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    ranks: np.ndarray | None = None,
    convention: str = "cluster_contrast",
    timings: dict | None = None,
) -> np.ndarray:
    """Pseudo labels by DBSCAN over :func:`jaccard_distance_dense`, numbered like ``cluster``'s.

    ``timings`` (if given) receives the seconds of ``"knn"``, ``"jaccard"`` and ``"dbscan"``.
    Needs about ``3 N^2 * 4`` bytes (``2.0 GB`` at ``N = 12,936``).
    """
    x = as_unit_rows(check_features(features))
    n = x.shape[0]
    clock = {} if timings is None else timings
    start = time.perf_counter()
    if ranks is None:
        _, ranks = knn_search(x, min(max(k1 + 1, k2), n), index="faiss_flat", normalize=False)
    clock["knn"] = time.perf_counter() - start
    start = time.perf_counter()
    dist = jaccard_distance_dense(x, k1=k1, k2=k2, ranks=ranks, convention=convention)
    clock["jaccard"] = time.perf_counter() - start
    start = time.perf_counter()
    model = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed")
    labels = relabel(model.fit_predict(dist))
    clock["dbscan"] = time.perf_counter() - start
    return labels
