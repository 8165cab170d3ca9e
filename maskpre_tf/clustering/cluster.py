"""Pseudo labels: DBSCAN over sparse k-reciprocal Jaccard distances, and cluster statistics.

:func:`pseudo_labels` is the one entry point, what training calls once an epoch: features and
the run's clustering settings (:class:`~maskpre_tf.config.ClusteringConfig`) in, one integer
label per sample out (``-1`` = outlier). It reproduces the standard recipe of cluster-contrast /
SpCL / MMT (k-reciprocal Jaccard distance with ``k1 = 30, k2 = 6``, then DBSCAN with
``min_samples = 4`` on precomputed distances) at a fixed eps or at the eps a rule chooses
(:mod:`.auto_eps`), without any ``N x N`` array: :func:`jaccard_graph` keeps only the pairs
within the largest eps considered, and :func:`~.dbscan.dbscan_labels` reads them. Because every
pair with no k-reciprocal overlap has distance exactly 1, the result equals the dense recipe's
whenever ``eps < 1``.

Layers, each importing only those below it: :mod:`.knn` (neighbours) → :mod:`.jaccard` →
:mod:`.dbscan` → :mod:`.auto_eps` → this module.

:func:`cluster_statistics` summarises a labelling (and scores it against ground-truth ids when
they exist, for diagnostics only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from maskpre_tf.clustering.auto_eps import MAX_EPS, choose_eps
from maskpre_tf.clustering.dbscan import check_dbscan_args, dbscan_labels
from maskpre_tf.clustering.jaccard import DEFAULT_CONVENTION, jaccard_distance, neighbour_depth
from maskpre_tf.clustering.knn import as_unit_rows, check_features, knn_search, l2_normalize
from maskpre_tf.config import ClusteringConfig
from maskpre_tf.errors import UserError
from maskpre_tf.kreciprocal import DEFAULT_MAX_TRIPLES


def camera_centered_features(features: np.ndarray, camids: np.ndarray) -> np.ndarray:
    """Remove each camera's mean direction from the features, then re-normalise.

    A light camera-aware option: features are L2-normalised, each camera's mean feature is
    subtracted from that camera's samples, and rows are L2-normalised again. This cancels a
    per-camera offset shared by all images of a camera (the idea behind camera-based
    normalisation, Zhuang et al., ECCV 2020), so clusters form by identity rather than camera.

    Args:
      features: ``[N, D]`` real features.
      camids: ``[N]`` integer camera ids.

    Returns:
      ``[N, D]`` float32 L2-normalised features.
    """
    x = l2_normalize(check_features(features))
    cams = np.asarray(camids).ravel()
    if cams.shape[0] != x.shape[0]:
        raise UserError(
            f"camids: expected {x.shape[0]} camera ids (one per feature row), got {cams.shape[0]}"
        )
    if cams.size and not np.issubdtype(cams.dtype, np.integer):
        raise UserError(f"camids: expected integer camera ids, got dtype {cams.dtype}")
    _, inverse = np.unique(cams, return_inverse=True)
    for cam in range(int(inverse.max()) + 1 if len(inverse) else 0):
        rows = inverse == cam
        x[rows] -= x[rows].mean(axis=0, dtype=np.float64).astype(np.float32)
    return l2_normalize(x)


def jaccard_graph(
    features: np.ndarray,
    max_distance: float,
    k1: int = 30,
    k2: int = 6,
    camids: np.ndarray | None = None,
    index: str = "auto",
    ranks: np.ndarray | None = None,
    num_threads: int | None = None,
    max_triples: int = DEFAULT_MAX_TRIPLES,
    seed: int = 0,
    timings: dict | None = None,
    convention: str = DEFAULT_CONVENTION,
):
    """The sparse k-reciprocal Jaccard distances ``<= max_distance`` that DBSCAN reads.

    Memory grows as ``O(N * k1 * k2)``; no ``N x N`` array is built.

    Args:
      features: ``[N, D]`` real features (float32 preferred), L2-normalised inside.
      max_distance: the largest distance kept (the largest eps DBSCAN will use), in ``(0, 1)``.
      k1, k2: k-reciprocal neighbourhood and query-expansion sizes.
      camids: optional ``[N]`` integer camera ids; when given, features are camera-centred
        first (:func:`camera_centered_features`). Not combinable with ``ranks``.
      index: k-NN back-end (``"auto"``: exact up to 200,000 samples, IVF above; ``"flat"``;
        ``"faiss_flat"``; ``"ivf"``).
      ranks: optional precomputed ``[N, >= neighbour_depth(N, k1, k2, convention)]`` neighbour
        ids of the L2-normalised features (from :func:`~maskpre_tf.clustering.knn.knn_search`).
      num_threads: faiss threads (``None``: unchanged).
      max_triples: per-block temporary-memory cap of the Jaccard computation.
      seed: seed of an approximate k-NN index (exact search needs none).
      timings: if a dict is given, it receives the seconds spent in ``"knn"`` and ``"jaccard"``.
      convention: neighbourhood sizes, ``"cluster_contrast"`` (default: ``k1`` neighbours
        with the sample itself, as cluster-contrast's faiss search) or ``"zhong"`` (``k1 + 1``);
        see :mod:`maskpre_tf.kreciprocal`.

    Returns:
      ``[N, N]`` float32 CSR matrix; a pair that is not stored is farther than ``max_distance``.
    """
    x = check_features(features)
    clock = {} if timings is None else timings
    if camids is not None:
        if ranks is not None:
            raise UserError(
                "cluster: pass either camids or precomputed ranks, not both (the ranks would "
                "not match the camera-centred features)"
            )
        x = camera_centered_features(x, camids)
    else:
        x = as_unit_rows(x)
    start = time.perf_counter()
    if ranks is None:
        need = neighbour_depth(x.shape[0], k1, k2, convention)
        _, ranks = knn_search(
            x, need, index=index, normalize=False, num_threads=num_threads, seed=seed
        )
    clock["knn"] = time.perf_counter() - start
    start = time.perf_counter()
    dist = jaccard_distance(
        x,
        k1=k1,
        k2=k2,
        max_distance=float(max_distance),
        ranks=ranks,
        row_order="distance",
        max_triples=max_triples,
        normalize=False,
        convention=convention,
    )
    clock["jaccard"] = time.perf_counter() - start
    return dist


@dataclass(frozen=True)
class Clustering:
    """One clustering: labels [N] int64 (``0..C-1`` by first appearance, ``-1`` outlier), the
    eps DBSCAN ran at, and the sparse Jaccard graph it read ([N, N] CSR, pairs up to the eps
    or up to the automatic rules' grid end)."""

    labels: np.ndarray
    eps: float
    graph: sp.csr_array


def pseudo_labels(
    features: np.ndarray, cfg: ClusteringConfig, camids: np.ndarray | None = None
) -> Clustering:
    """One epoch's pseudo labels, at ``cfg``'s fixed eps or at the one its rule chooses.

    Args:
      features: ``[N, D]`` real features, L2-normalised inside.
      cfg: the clustering settings: eps (a number, ``auto`` or ``auto_linked``),
        eps_tolerance, min_samples, k1, k2, camera_aware.
      camids: ``[N]`` camera ids, used when ``cfg.camera_aware``.
    """
    eps = cfg.fixed_eps
    check_dbscan_args(MAX_EPS if eps is None else eps, cfg.min_samples)
    if check_features(features).shape[0] == 0:
        return Clustering(np.empty(0, np.int64), float(eps or MAX_EPS), sp.csr_array((0, 0)))
    centre = camids if cfg.camera_aware else None
    dist = jaccard_graph(features, MAX_EPS if eps is None else eps, cfg.k1, cfg.k2, centre)
    if eps is None:
        eps = choose_eps(dist, cfg.min_samples, rule=cfg.auto_rule, tolerance=cfg.eps_tolerance)
    return Clustering(dbscan_labels(dist, eps, cfg.min_samples), float(eps), dist)


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs inside groups of the given sizes."""
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


def cluster_statistics(labels: np.ndarray, true_pids: np.ndarray | None = None) -> dict:
    """Summary of a pseudo labelling, JSON-serialisable (plain ints and floats).

    Args:
      labels: ``[N]`` integer pseudo labels, ``-1`` = outlier.
      true_pids: optional ``[N]`` ground-truth identities (diagnostics only). Samples with a
        negative true id (unknown) are left out of the scores.

    Returns:
      ``num_samples``, ``num_clusters``, ``num_outliers``, ``outlier_fraction``,
      ``num_clustered``, ``largest``, ``smallest``, ``median_size``, ``mean_size`` (sizes over
      clusters, 0 when there are none); with ``true_pids`` also ``num_scored``, ``nmi``, ``ari``,
      ``pairwise_precision``, ``pairwise_recall``, ``pairwise_f1``. For the scores each outlier
      is its own singleton cluster; pairwise precision = same-cluster pairs that share an
      identity / same-cluster pairs, recall = same-identity pairs put in one cluster /
      same-identity pairs (1.0 when the denominator is 0).
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    n = int(labels.size)
    inlier = labels >= 0
    _, sizes = np.unique(labels[inlier], return_counts=True)
    stats: dict = {
        "num_samples": n,
        "num_clusters": int(len(sizes)),
        "num_outliers": int(n - inlier.sum()),
        "outlier_fraction": float((n - inlier.sum()) / n) if n else 0.0,
        "num_clustered": int(inlier.sum()),
        "largest": int(sizes.max()) if len(sizes) else 0,
        "smallest": int(sizes.min()) if len(sizes) else 0,
        "median_size": float(np.median(sizes)) if len(sizes) else 0.0,
        "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
    }
    if true_pids is None:
        return stats
    pids = np.asarray(true_pids).ravel()
    if pids.shape[0] != n:
        raise UserError(
            f"true_pids: expected {n} ids (one per label), got {pids.shape[0]}; pass the "
            "ground-truth ids of the same samples in the same order"
        )
    scored = pids.astype(np.int64) >= 0
    pred = labels[scored].copy()
    truth = pids[scored].astype(np.int64)
    outliers = pred < 0
    # Each outlier becomes its own singleton cluster with an id no real cluster uses.
    pred[outliers] = pred.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    stats["num_scored"] = int(scored.sum())
    if pred.size == 0:
        stats.update(nmi=0.0, ari=0.0, pairwise_precision=1.0, pairwise_recall=1.0, pairwise_f1=1.0)
        return stats
    table = contingency_matrix(truth, pred, sparse=True)
    both = _pairs(table.data)
    same_cluster = _pairs(np.asarray(table.sum(axis=0)).ravel())
    same_id = _pairs(np.asarray(table.sum(axis=1)).ravel())
    precision = both / same_cluster if same_cluster else 1.0
    recall = both / same_id if same_id else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    stats.update(
        nmi=float(normalized_mutual_info_score(truth, pred)),
        ari=float(adjusted_rand_score(truth, pred)),
        pairwise_precision=float(precision),
        pairwise_recall=float(recall),
        pairwise_f1=float(f1),
    )
    return stats
