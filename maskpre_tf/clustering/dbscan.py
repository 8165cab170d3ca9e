"""DBSCAN over a precomputed (sparse) distance matrix, with labels numbered by first appearance.

scikit-learn's DBSCAN reads the sparse Jaccard graph as a precomputed matrix: a pair that is not
stored counts as farther than ``eps``, a stored 0 is a real distance 0, and each point's
self-distance is added by scikit-learn itself. Both the training's pseudo labels
(:mod:`.cluster`) and the automatic eps rules (:mod:`.auto_eps`) call :func:`dbscan_labels`.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN

from maskpre_tf.errors import UserError


def check_dbscan_args(eps: float, min_samples: int) -> None:
    if not 0.0 < float(eps) < 1.0:
        raise UserError(
            f"eps must lie in (0, 1) for Jaccard distances, got {eps}; typical values are "
            "0.5-0.7 (pairs with no k-reciprocal overlap are at distance 1, so eps >= 1 would "
            "merge everything)"
        )
    if int(min_samples) < 1:
        raise UserError(f"min_samples must be >= 1, got {min_samples}; the usual value is 4")


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster ids to ``0..C-1`` in order of first appearance; keep ``-1`` outliers.

    Args:
      labels: ``[N]`` integer labels, negative = outlier.

    Returns:
      ``[N]`` int64 labels.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    out = np.full(labels.shape, -1, dtype=np.int64)
    inlier = labels >= 0
    if inlier.any():
        uniq, first, inverse = np.unique(labels[inlier], return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        out[inlier] = rank[inverse]
    return out


def dbscan_labels(dist, eps: float, min_samples: int = 4) -> np.ndarray:
    """DBSCAN labels of a precomputed sparse (or dense) distance matrix at ``eps``.

    Pairs stored above ``eps`` are ignored, so one matrix built with a larger ``max_distance``
    serves every smaller eps (as the eps probe does).

    Returns:
      ``[N]`` int64 labels ``0..C-1`` numbered by first appearance, ``-1`` for outliers.
    """
    check_dbscan_args(eps, min_samples)
    model = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed")
    return relabel(model.fit_predict(dist))
