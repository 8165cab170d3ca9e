"""Label-free choice of DBSCAN's eps: the eps whose clusters best agree with the Jaccard graph.

The k-reciprocal Jaccard graph links two images when their neighbourhoods overlap (distance
below the grid's end, 0.8; pairs with no overlap are at 1). A good clustering keeps linked pairs
together and puts few unlinked pairs in one cluster. So for each eps of a grid, with DBSCAN's
labels at that eps,

    precision = linked pairs inside clusters / all pairs inside clusters
    recall    = linked pairs inside clusters / all linked pairs

and ``--eps=auto`` takes the eps of the highest F1 = 2PR / (P + R): the pairwise F1 of
re-ID clustering, scored against the graph instead of the hidden identities. Too small an eps
fragments identities and drops images as outliers (recall falls); too large an eps chains
identities into one cluster, whose pairs are mostly unlinked (precision collapses).

Measured with ``python -m maskpre_tf.clustering.probe`` (k1 30, k2 6, min_samples 4; ARI
against the hidden ids at the eps chosen; "most clusters" is this module's earlier rule):

- real Market-1501, ImageNet MobileNetV2 features (128x64): most clusters 0.675 (ARI 0.029),
  linked-pair F1 0.600 (0.043), the best eps of the grid 0.600 (0.043);
- real DukeMTMC-reID, the student after a Market->Duke run: most clusters 0.300 (ARI 0.328,
  4,739 outliers), linked-pair F1 0.500 (0.417, 2,554 outliers), best 0.525 (0.427);
- 30 separated Gaussian blobs of 20 (3 draws, k1 10, k2 3): most clusters 0.35-0.40 (ARI
  0.36-0.55), linked-pair F1 0.650-0.725 (0.995-1.000), best 0.70-0.80 (1.000).

"Most clusters" (this module's earlier rule) peaks where DBSCAN cuts identities into fragments
whenever the features are clean enough that there is no merging inside the grid: on trained
Duke features its peak sat at the grid's start. MMT's rule (the mean of the smallest 0.16% of
all pairwise distances, Ge et al., ICLR 2020) gives 0.79 on the ImageNet Market features, where
DBSCAN puts 11,884 of 12,936 images into one cluster. Because the best eps moves as the features
train, the eps is chosen again at every clustering.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

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


def eps_scores(
    dist: sp.csr_array, min_samples: int = 4, grid: tuple[float, ...] = GRID
) -> list[float]:
    """Linked-pair F1 of DBSCAN's clusters at each eps of ``grid`` on one distance graph.

    Args:
      dist: [N, N] sparse Jaccard distances, built with ``max_distance >= max(grid)``.
    """
    from maskpre_tf.clustering.cluster import dbscan_labels

    rows, cols = linked_pairs(dist)
    return [linked_pair_f1(dbscan_labels(dist, eps, min_samples), rows, cols) for eps in grid]


def choose_eps(dist: sp.csr_array, min_samples: int = 4, grid: tuple[float, ...] = GRID) -> float:
    """The eps of ``grid`` with the highest linked-pair F1 (the smallest one on ties)."""
    return float(grid[int(np.argmax(eps_scores(dist, min_samples, grid)))])


def nearest_distances(dist: sp.csr_array) -> np.ndarray:
    """Each sample's Jaccard distance to its nearest other sample ([N]; 1 when none stored)."""
    dist = sp.csr_array(dist)
    rows = np.repeat(np.arange(dist.shape[0]), np.diff(dist.indptr))
    other = dist.indices != rows
    nearest = np.ones(dist.shape[0], np.float32)
    np.minimum.at(nearest, rows[other], dist.data[other])
    return nearest
