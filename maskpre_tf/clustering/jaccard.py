"""Sparse k-reciprocal Jaccard distance between all training samples, for pseudo labels.

For L2-normalised features ``x_i`` the original distance is ``d(i, j) = 2 - 2 <x_i, x_j>`` (the
squared Euclidean distance, which cluster-contrast computes as ``2 - 2 x_i x_j^T``); neighbour
lists come from :func:`~maskpre_tf.clustering.knn.knn_search` and the encoding and Jaccard steps
from :mod:`maskpre_tf.kreciprocal`. The default neighbourhood convention is cluster-contrast's
(``|N(i, k1)| = k1``, self included), whose labels the training recipe reproduces; ``"zhong"``
gives the paper's ``k1 + 1``.

The result is a sparse symmetric matrix that stores exactly the pairs with ``d_J < 1``
(optionally only those ``<= max_distance``); a pair that is not stored has distance 1. Memory
grows as ``O(N * k1 * k2)``; no ``N x N`` array is built.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from maskpre_tf import kreciprocal
from maskpre_tf.clustering.knn import as_unit_rows, check_features, knn_search
from maskpre_tf.errors import UserError

#: Default neighbourhood convention of the pseudo labels (see :mod:`maskpre_tf.kreciprocal`).
DEFAULT_CONVENTION = "cluster_contrast"


def neighbour_depth(num_samples: int, k1: int, k2: int, convention: str) -> int:
    """Neighbours to search per sample: :func:`~maskpre_tf.kreciprocal.list_depth`, at most N."""
    return min(kreciprocal.list_depth(k1, k2, convention), num_samples)


def _symmetric_csr(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int, row_order: str
) -> sp.csr_array:
    """CSR of the upper-triangle triples ``(rows <= cols)`` and their mirror images.

    Rows are ordered by column index or by value (``row_order``), using one int64 sort key:
    the row in the high 32 bits, and the column or the bit pattern of the non-negative float32
    value (which orders like the value) in the low 32 bits.
    """
    off = rows != cols
    all_rows = np.concatenate((rows, cols[off]))
    all_cols = np.concatenate((cols, rows[off]))
    all_vals = np.concatenate((vals, vals[off]))
    del rows, cols, vals, off
    low = all_cols if row_order == "column" else all_vals.view(np.uint32).astype(np.int64)
    order = np.argsort((all_rows << 32) | low)
    del low
    counts = np.bincount(all_rows, minlength=n)
    indptr = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    return kreciprocal.build_csr(indptr, all_cols[order], all_vals[order], (n, n))


def jaccard_distance(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    max_distance: float | None = None,
    ranks: np.ndarray | None = None,
    index: str = "auto",
    row_order: str = "column",
    max_triples: int = kreciprocal.DEFAULT_MAX_TRIPLES,
    num_threads: int | None = None,
    seed: int = 0,
    normalize: bool = True,
    convention: str = DEFAULT_CONVENTION,
) -> sp.csr_array:
    """Sparse k-reciprocal Jaccard distance between all samples (see the module docstring).

    Args:
      features: ``[N, D]`` real features (L2-normalised inside; cosine geometry).
      k1: k-reciprocal neighbourhood size (30 in cluster-contrast / SpCL / MMT).
      k2: local query expansion size (6).
      max_distance: drop pairs farther than this (``None`` keeps all pairs with overlap).
      ranks: optional precomputed ``[N, >= neighbour_depth(N, k1, k2, convention)]`` int64
        neighbour ids of the normalised features, nearest first, ``-1`` = missing (e.g. from
        :func:`knn_search`); computed when ``None``.
      index: k-NN back-end for :func:`knn_search` (``"auto"``, ``"flat"``, ``"ivf"``).
      row_order: ``"column"`` (column indices sorted) or ``"distance"`` (each row sorted by
        increasing distance, the layout scikit-learn wants for precomputed sparse input).
      max_triples: temporary-memory cap per block of rows (triples of ~40 bytes each).
      num_threads: faiss threads (``None``: unchanged).
      seed: seed of an approximate index.
      normalize: L2-normalise the features (no copy is made when they already are unit rows);
        False trusts the caller.
      convention: ``"cluster_contrast"`` (default) or ``"zhong"`` neighbourhood sizes.

    Returns:
      ``[N, N]`` float32 CSR of Jaccard distances in ``[0, 1)``; a pair not stored has
      distance 1 (or is farther than ``max_distance``). Explicit zeros are real distances 0;
      the diagonal is stored for every sample with a non-empty encoding.
    """
    kreciprocal.check_parameters(k1, k2, convention)
    if row_order not in ("column", "distance"):
        raise UserError(f"row_order must be 'column' or 'distance', got {row_order!r}")
    x = check_features(features)
    x = as_unit_rows(x) if normalize else np.ascontiguousarray(x)
    n = x.shape[0]
    need = neighbour_depth(n, k1, k2, convention)
    if n == 0:
        empty = np.empty(0, np.int64)
        return kreciprocal.build_csr(np.zeros(1, np.int64), empty, empty.astype(np.float32), (0, 0))
    if ranks is None:
        _, ranks = knn_search(
            x, need, index=index, normalize=False, num_threads=num_threads, seed=seed
        )
    elif ranks.ndim != 2 or ranks.shape[0] != n or ranks.shape[1] < need:
        raise UserError(
            f"ranks: expected shape [{n}, >= {need}], got {ranks.shape}; pass the output of "
            f"knn_search(features, {need}) or leave ranks=None"
        )

    def pair_distance(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return 2.0 - 2.0 * kreciprocal.pair_dots(x, x, rows, cols).astype(np.float64)

    w = kreciprocal.k_reciprocal_encoding(
        ranks, pair_distance, k1, k2, convention, max_triples=max_triples
    )
    parts = []
    for rows, cols, dist in kreciprocal.jaccard_blocks(
        w, kreciprocal.column_index(w), within=True, max_triples=max_triples
    ):
        if max_distance is not None:
            keep = dist <= max_distance
            rows, cols, dist = rows[keep], cols[keep], dist[keep]
        parts.append((rows, cols, dist))
    del w
    if not parts:
        parts.append((np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)))
    rows, cols, vals = (np.concatenate(p) for p in zip(*parts, strict=True))
    del parts
    return _symmetric_csr(rows, cols, vals, n, row_order)
