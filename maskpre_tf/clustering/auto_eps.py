"""Label-free choice of DBSCAN's eps, chosen again at every clustering: two rules.

``--eps=auto`` takes the eps of a grid at which DBSCAN finds the **most clusters**. As eps grows
on a fixed set of k-reciprocal Jaccard distances, DBSCAN first turns dense groups into clusters
(the count rises), then chains neighbouring groups into one (the count falls while the largest
cluster explodes); the peak marks the onset of merging.

``--eps=auto_linked`` takes the eps whose clusters best match the graph's **linked pairs**
(overlapping k-reciprocal neighbourhoods: distance below the grid's end, 0.8). With DBSCAN's
labels at each eps, precision = linked pairs inside clusters / all pairs inside clusters, recall
= linked pairs inside clusters / all linked pairs, and the rule takes the highest F1: the
pairwise F1 of re-ID clustering, scored against the graph instead of the hidden identities.

Measured with ``python -m maskpre_tf.clustering.probe`` (k1 30, k2 6, min_samples 4; ARI
against the hidden ids at the eps chosen):

- real Market-1501, ImageNet MobileNetV2 features (128x64): most clusters 0.675 (ARI 0.029),
  linked pairs 0.600 (0.043), the best eps of the grid 0.600 (0.043);
- real DukeMTMC-reID, the student after a Market->Duke run: most clusters 0.300 (ARI 0.328,
  4,739 outliers), linked pairs 0.500 (0.417, 2,554 outliers), best 0.525 (0.427);
- 30 separated Gaussian blobs of 20 (3 draws, k1 10, k2 3): most clusters 0.35-0.40 (ARI
  0.36-0.55; with no merging inside the grid its peak sits where identities are cut into
  fragments), linked pairs 0.650-0.725 (0.995-1.000), best 0.70-0.80 (1.000).

One clustering at a time, the linked-pair rule is the better one. A training run is not one
clustering, though: on real Market-1501 (``configs/market_cpu.flags``, seed 0) the protocol with
the linked-pair rule trailed the same protocol with the most-clusters rule at every evaluation
(student mAP at epochs 4 / 8 / 12: 13.1 / 18.3 / 22.2 against 14.1 / 22.1 / 25.6). Its first
clustering, at 0.600, keeps 2,194 of 12,936 images (most clusters: 4,842 at 0.675), and the
early epochs learn from fewer images; the clusters of later epochs stay less accurate (ARI at
epoch 10: 0.348 against 0.403). So ``auto`` stays the most-clusters rule, and ``auto_linked``
is there for features that are already clean (a trained model re-clustered, adaptation from a
strong source) and for the probe. MMT's rule (the mean of the smallest 0.16% of all pairwise
distances, Ge et al., ICLR 2020) gives 0.79 on the ImageNet Market features, where DBSCAN puts
11,884 of 12,936 images into one cluster.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from maskpre_tf.clustering.dbscan import dbscan_labels
from maskpre_tf.config import AUTO_EPS

# Candidate eps: the range re-ID recipes use and beyond, in steps of 0.025.
GRID = tuple(round(0.3 + 0.025 * i, 3) for i in range(21))  # 0.30 .. 0.80
MAX_EPS = GRID[-1]


def linked_pairs(dist: sp.csr_array, link: float = MAX_EPS) -> tuple[np.ndarray, np.ndarray]:
    """The graph's linked pairs: rows and columns [L] of off-diagonal distances below ``link``.

    Args:
      dist: [N, N] sparse Jaccard distances (symmetric; each pair is listed both ways).
    """
    dist = sp.csr_array(dist)
    rows = np.repeat(np.arange(dist.shape[0]), np.diff(dist.indptr))
    keep = (rows != dist.indices) & (dist.data < link)
    return rows[keep], dist.indices[keep]


def linked_pair_f1(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Pairwise F1 of a clustering against the linked pairs (see the module docstring).

    Args:
      labels: int [N] cluster labels, -1 = outlier. rows, cols: [L] linked pairs, both ways.
    Returns:
      F1 in [0, 1]; 0 without clusters or linked pairs.
    """
    labels = np.asarray(labels)
    inside = int(np.count_nonzero((labels[rows] == labels[cols]) & (labels[rows] >= 0)))
    sizes = np.bincount(labels[labels >= 0]).astype(np.int64)
    pairs = int((sizes * (sizes - 1)).sum())  # ordered, as the linked pairs are
    if inside == 0 or pairs == 0:
        return 0.0
    precision, recall = inside / pairs, inside / len(rows)
    return 2 * precision * recall / (precision + recall)


def cluster_counts(
    dist: sp.csr_array, min_samples: int = 4, grid: tuple[float, ...] = GRID
) -> list[int]:
    """Number of DBSCAN clusters at each eps of ``grid`` on one distance graph.

    Args:
      dist: [N, N] sparse Jaccard distances, built with ``max_distance >= max(grid)``.
    """
    return [int(dbscan_labels(dist, eps, min_samples).max()) + 1 for eps in grid]


def linked_pair_scores(
    dist: sp.csr_array, min_samples: int = 4, grid: tuple[float, ...] = GRID
) -> list[float]:
    """Linked-pair F1 of DBSCAN's clusters at each eps of ``grid`` on one distance graph.

    Args:
      dist: [N, N] sparse Jaccard distances, built with ``max_distance >= max(grid)``.
    """
    rows, cols = linked_pairs(dist)
    return [linked_pair_f1(dbscan_labels(dist, eps, min_samples), rows, cols) for eps in grid]


def plateau_end(scores: list[float], tolerance: float) -> int:
    """Index of the right end of the plateau around the highest score.

    From the first maximum, walk to larger eps while the score stays above
    ``(1 - tolerance) * max``; ``tolerance`` 0 returns the first maximum itself.

    Args:
      scores: one score per grid eps, in increasing eps. tolerance: fraction in [0, 1).
    """
    best = int(np.argmax(scores))
    floor = (1.0 - tolerance) * scores[best]
    end = best
    while end + 1 < len(scores) and scores[end + 1] > floor:
        end += 1
    return end


def choose_eps(
    dist: sp.csr_array,
    min_samples: int = 4,
    grid: tuple[float, ...] = GRID,
    rule: str = "auto",
    tolerance: float = 0.0,
) -> float:
    """The eps of ``grid`` with the most clusters (``auto``) or the highest linked-pair F1
    (``auto_linked``): the right end of the plateau within ``tolerance`` of the peak
    (:func:`plateau_end`; 0 gives the smallest eps of the peak)."""
    if rule not in AUTO_EPS:
        raise ValueError(f"unknown eps rule {rule!r}; expected one of {AUTO_EPS}")
    score = cluster_counts if rule == "auto" else linked_pair_scores
    return float(grid[plateau_end(score(dist, min_samples, grid), tolerance)])


def nearest_distances(dist: sp.csr_array) -> np.ndarray:
    """Each sample's Jaccard distance to its nearest other sample ([N]; 1 when none stored)."""
    dist = sp.csr_array(dist)
    rows = np.repeat(np.arange(dist.shape[0]), np.diff(dist.indptr))
    other = dist.indices != rows
    nearest = np.ones(dist.shape[0], np.float32)
    np.minimum.at(nearest, rows[other], dist.data[other])
    return nearest
