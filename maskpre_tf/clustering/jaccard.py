"""k-reciprocal Jaccard distance (Zhong et al., CVPR 2017) on sparse rows, plus a dense reference.

Definition (the variant used for pseudo labels by cluster-contrast, SpCL and MMT), for
L2-normalised features ``x_i`` with original distance ``d(i, j) = 2 - 2 <x_i, x_j>``:

1. ``N(i, k)``: the ``k + 1`` nearest samples of ``i`` (itself included) by ``d``, as in Zhong
   et al. (faiss-based implementations that ask the search for only ``k1`` neighbours end up
   with ``k1`` samples in ``N(i, k1)``).
2. k-reciprocal set ``R(i, k) = {j in N(i, k) : i in N(j, k)}``.
3. Expansion: ``R*(i)`` is ``R(i, k1)`` joined with every ``R(c, round(k1 / 2))``,
   ``c in R(i, k1)``, that satisfies ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|``.
4. Encoding ``V[i, j] = exp(-d(i, j)) / sum_{j' in R*(i)} exp(-d(i, j'))`` for ``j in R*(i)``,
   0 elsewhere (each row sums to 1).
5. Local query expansion: ``V'[i] = mean of V[j]`` over the ``k2`` nearest samples ``j`` of ``i``
   (itself included); skipped when ``k2 == 1``.
6. ``d_J(i, j) = 1 - sum_h min(V'[i, h], V'[j, h]) / sum_h max(V'[i, h], V'[j, h])``, clipped
   at 0. Pairs whose encodings share no column have ``d_J = 1`` exactly.

Steps 2–6 here only ever hold the non-zero entries of each row: ``R``, ``R*``, ``V`` and ``V'``
are sparse row sets of size ``O(k1)`` (``O(k1 * k2)`` for ``V'``), and step 6 walks an inverted
index (the columns of ``V'``) in blocks of rows whose temporary size is capped by
``max_triples``. The result is a sparse matrix that stores exactly the pairs with ``d_J < 1``
(optionally only those ``<= max_distance``); a pair that is not stored has distance 1.

:func:`jaccard_distance_dense_reference` computes the same quantity the way the widely used
dense implementation does (``N x N`` float32 matrices, row loops, inverted index by column);
it exists for tests and benchmarks only and needs ``O(N^2)`` memory.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from maskpre_tf.clustering.knn import as_unit_rows, check_features, knn_search
from maskpre_tf.errors import UserError

#: Default cap on the number of temporary (row, column, value) triples held per block.
DEFAULT_MAX_TRIPLES = 1_000_000

#: Float elements gathered per block when computing pairwise inner products.
_GATHER_FLOATS = 1 << 20


def half_k(k1: int) -> int:
    """Neighbourhood size used for the candidates' sets in the expansion: ``round(k1 / 2)``.

    Rounds half to even (``np.around``), as the reference implementations do.
    """
    return int(np.around(k1 / 2))


def _segment_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(starts[p], starts[p] + counts[p])`` for every ``p`` (int64)."""
    counts = counts.astype(np.int64, copy=False)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) + np.repeat(starts.astype(np.int64) - offsets, counts)


def _blocks(costs: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows ``0..len(costs)`` into consecutive blocks whose summed cost is <= ``budget``.

    A single row whose cost exceeds the budget forms a block on its own.
    """
    n = len(costs)
    if n == 0:
        return []
    cum = np.concatenate(([0], np.cumsum(costs, dtype=np.int64)))
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        stop = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1
        bounds.append(max(stop, start + 1))
    bounds[-1] = min(bounds[-1], n)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n: int) -> sp.csr_array:
    """Build an ``n x n`` CSR array, using int32 index arrays when they fit."""
    idx_dtype = np.int32 if max(len(indices), n) < np.iinfo(np.int32).max else np.int64
    return sp.csr_array(
        (data, indices.astype(idx_dtype, copy=False), indptr.astype(idx_dtype, copy=False)),
        shape=(n, n),
    )


def k_reciprocal_sets(ranks: np.ndarray, k: int, block_rows: int = 2048) -> sp.csr_array:
    """k-reciprocal neighbour sets ``R(i, k)`` as the rows of a sparse boolean matrix.

    Args:
      ranks: ``[N, K]`` int64 neighbour ids of every sample, nearest first (itself normally
        first); ``-1`` marks a missing neighbour. Only the first ``k + 1`` columns are used.
      k: neighbourhood size; ``N(i, k) = ranks[i, :k + 1]``.
      block_rows: rows checked per step (bounds temporary memory to about
        ``block_rows * (k + 1)^2 * 9`` bytes).

    Returns:
      ``[N, N]`` bool CSR array with sorted column indices; row ``i`` holds ``R(i, k)``.
    """
    n = ranks.shape[0]
    fwd = np.ascontiguousarray(ranks[:, : k + 1])
    width = fwd.shape[1]
    keep = np.zeros(fwd.shape, dtype=bool)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        f = fwd[start:stop]
        valid = f >= 0
        back = fwd[np.where(valid, f, 0)]  # [rows, width, width]
        me = np.arange(start, stop, dtype=np.int64)[:, None, None]
        keep[start:stop] = valid & (back == me).any(axis=2)
    counts = keep.sum(axis=1)
    cols = np.where(keep, fwd, np.iinfo(np.int64).max)
    cols.sort(axis=1)
    indices = cols[:, :width][np.arange(width)[None, :] < counts[:, None]]
    indptr = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    return _csr(indptr, indices, np.ones(len(indices), dtype=bool), n)


def expand_reciprocal_sets(
    recip: sp.csr_array, recip_half: sp.csr_array, max_triples: int = DEFAULT_MAX_TRIPLES
) -> sp.csr_array:
    """Expand each ``R(i, k1)`` with the candidates' ``R(c, k1/2)`` that mostly lie inside it.

    ``R(c, k1/2)`` is added to row ``i`` when ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|``.

    Args:
      recip: ``[N, N]`` bool CSR, row ``i`` = ``R(i, k1)``, sorted columns.
      recip_half: ``[N, N]`` bool CSR, row ``c`` = ``R(c, round(k1/2))``.
      max_triples: cap on the (row, candidate, member) triples built per block of rows.

    Returns:
      ``[N, N]`` bool CSR with sorted columns; row ``i`` = ``R*(i)``.
    """
    n = recip.shape[0]
    r_ptr, r_ind = recip.indptr.astype(np.int64), recip.indices
    h_ptr, h_ind = recip_half.indptr.astype(np.int64), recip_half.indices
    h_len = np.diff(h_ptr)
    cum = np.concatenate(([0], np.cumsum(h_len[r_ind], dtype=np.int64)))
    row_cost = cum[r_ptr[1:]] - cum[r_ptr[:-1]]
    out_rows: list[np.ndarray] = []
    out_cols: list[np.ndarray] = []
    for a, b in _blocks(row_cost + np.diff(r_ptr), max_triples):
        lo, hi = r_ptr[a], r_ptr[b]
        p_row = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(r_ptr[a : b + 1]))
        p_cand = r_ind[lo:hi].astype(np.int64)
        p_key = p_row * n + p_cand  # sorted: rows ascending, columns sorted within rows
        t_len = h_len[p_cand]
        t_pair = np.repeat(np.arange(len(p_cand), dtype=np.int64), t_len)
        t_member = h_ind[_segment_positions(h_ptr[p_cand], t_len)].astype(np.int64)
        t_key = p_row[t_pair] * n + t_member
        pos = np.minimum(np.searchsorted(p_key, t_key), max(len(p_key) - 1, 0))
        inside = p_key[pos] == t_key if len(p_key) else np.zeros(0, dtype=bool)
        overlap = np.bincount(t_pair, weights=inside, minlength=len(p_cand))
        accept = overlap > 2.0 / 3.0 * t_len
        added = t_key[accept[t_pair]]
        keys = np.unique(np.concatenate((p_key, added)))
        out_rows.append(keys // n)
        out_cols.append(keys % n)
    rows = np.concatenate(out_rows) if out_rows else np.empty(0, np.int64)
    cols = np.concatenate(out_cols) if out_cols else np.empty(0, np.int64)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n), dtype=np.int64)))
    return _csr(indptr, cols, np.ones(len(cols), dtype=bool), n)


def _pair_inner_products(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``<x[rows[p]], x[cols[p]]>`` for every pair ``p`` (float32), gathered in bounded blocks."""
    out = np.empty(len(rows), dtype=np.float32)
    step = max(1, _GATHER_FLOATS // max(1, x.shape[1]))
    for s in range(0, len(rows), step):
        e = min(s + step, len(rows))
        out[s:e] = np.einsum("pd,pd->p", x[rows[s:e]], x[cols[s:e]])
    return out


def encode_neighbourhoods(
    x: np.ndarray, expanded: sp.csr_array, max_pairs: int = DEFAULT_MAX_TRIPLES
) -> sp.csr_array:
    """Soft k-reciprocal encoding ``V``: softmax of ``-(2 - 2 cos)`` over each row's set.

    Args:
      x: ``[N, D]`` float32 L2-normalised features.
      expanded: ``[N, N]`` bool CSR, row ``i`` = ``R*(i)``.
      max_pairs: pairs processed per block of rows (bounds temporary memory).

    Returns:
      ``[N, N]`` float32 CSR with the pattern of ``expanded``; non-empty rows sum to 1.
    """
    n = x.shape[0]
    indptr = expanded.indptr.astype(np.int64)
    cols = expanded.indices
    data = np.empty(len(cols), dtype=np.float32)
    for a, b in _blocks(np.diff(indptr), max_pairs):
        lo, hi = indptr[a], indptr[b]
        if hi == lo:
            continue
        lengths = np.diff(indptr[a : b + 1])
        rows = np.repeat(np.arange(a, b, dtype=np.int64), lengths)
        dist = 2.0 - 2.0 * _pair_inner_products(x, rows, cols[lo:hi]).astype(np.float64)
        # Softmax of -dist per row, shifted by the row's smallest distance for stability.
        starts = (indptr[a:b] - lo)[lengths > 0]
        row_min = np.zeros(b - a)
        row_min[lengths > 0] = np.minimum.reduceat(dist, starts)
        w = np.exp(-(dist - row_min[rows - a]))
        w /= np.bincount(rows - a, weights=w, minlength=b - a)[rows - a]
        data[lo:hi] = w
    return _csr(indptr, cols, data, n)


def local_query_expansion(v: sp.csr_array, ranks: np.ndarray, k2: int) -> sp.csr_array:
    """Average each row of ``v`` with its ``k2 - 1`` nearest neighbours' rows.

    Args:
      v: ``[N, N]`` float32 CSR encoding.
      ranks: ``[N, K]`` int64 neighbour ids, nearest first; ``-1`` = missing (skipped, the mean
        is then over the neighbours present).
      k2: neighbours averaged, itself included; ``k2 == 1`` returns ``v`` unchanged.

    Returns:
      ``[N, N]`` float32 CSR ``V'`` with sorted column indices.
    """
    if k2 == 1:
        return v
    n = v.shape[0]
    nb = ranks[:, :k2]
    valid = nb >= 0
    counts = valid.sum(axis=1)
    q_cols = nb[valid]
    q_data = np.repeat((1.0 / np.maximum(counts, 1)).astype(np.float32), counts)
    q_ptr = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    q = _csr(q_ptr, q_cols, q_data, n)
    out = sp.csr_array(q @ v)
    out.sort_indices()
    return out


def jaccard_from_encoding(
    w: sp.csr_array,
    max_distance: float | None = None,
    row_order: str = "column",
    max_triples: int = DEFAULT_MAX_TRIPLES,
) -> sp.csr_array:
    """Jaccard distances ``1 - sum(min) / sum(max)`` between all rows of ``w`` that overlap.

    Walks an inverted index (the columns of ``w``): for a block of rows, every stored
    ``w[i, h]`` meets every stored ``w[j, h]``, ``j >= i``, of the same column, giving ``min``
    terms that are summed per pair ``(i, j)`` (one sort of int64 keys per block);
    ``sum(max) = s_i + s_j - sum(min)`` with row sums ``s``. The distance is symmetric, so only
    pairs ``j >= i`` are computed and then mirrored.

    Args:
      w: ``[N, N]`` float32 CSR with non-negative entries.
      max_distance: keep only pairs with distance ``<= max_distance`` (``None``: keep every
        pair with an overlap, i.e. every distance ``< 1``).
      row_order: ``"column"`` (column indices sorted) or ``"distance"`` (each row sorted by
        increasing distance, the layout scikit-learn wants for precomputed sparse input).
      max_triples: cap on the (row, column, value) triples held per block of rows.

    Returns:
      ``[N, N]`` float32 CSR of Jaccard distances in ``[0, 1)``; the diagonal is stored (0 up to
      rounding) for every non-empty row; explicit zeros are kept. Missing pairs mean 1.
    """
    if row_order not in ("column", "distance"):
        raise UserError(f"row_order must be 'column' or 'distance', got {row_order!r}")
    n = w.shape[0]
    w = sp.csr_array(w)
    w.sort_indices()
    nnz = w.nnz
    r_ptr = w.indptr.astype(np.int64)
    r_ind, r_val = w.indices, w.data
    # Column view whose data are 1-based CSR entry numbers: gives each CSR entry (i, h) its
    # position in column h, after which come exactly the rows j > i of that column.
    entry_ids = np.arange(1, nnz + 1, dtype=np.int64)
    wc = sp.csr_array((entry_ids, r_ind, w.indptr), shape=w.shape).tocsc()
    wc.sort_indices()
    c_ptr = wc.indptr.astype(np.int64)
    c_ind = wc.indices
    csc_pos = np.empty(nnz, dtype=np.int64)
    csc_pos[wc.data - 1] = np.arange(nnz, dtype=np.int64)
    c_val = r_val[wc.data - 1]
    del wc
    row_sum = np.bincount(np.repeat(np.arange(n), np.diff(r_ptr)), weights=r_val, minlength=n)
    entry_cost = c_ptr[r_ind.astype(np.int64) + 1] - csc_pos
    cum = np.concatenate(([0], np.cumsum(entry_cost, dtype=np.int64)))
    row_cost = cum[r_ptr[1:]] - cum[r_ptr[:-1]]
    out_rows: list[np.ndarray] = []
    out_cols: list[np.ndarray] = []
    out_vals: list[np.ndarray] = []
    for a, b in _blocks(row_cost, max_triples):
        lo, hi = r_ptr[a], r_ptr[b]
        t_len = entry_cost[lo:hi]
        pos = _segment_positions(csc_pos[lo:hi], t_len)
        e_row = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(r_ptr[a : b + 1]))
        key = np.repeat(e_row * n, t_len) + c_ind[pos]
        t_min = np.minimum(np.repeat(r_val[lo:hi], t_len), c_val[pos])
        del pos
        order = np.argsort(key)
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        m = np.add.reduceat(t_min[order], starts, dtype=np.float64)
        key = key[starts]
        del order, starts, t_min
        rows = key // n + a
        cols = key % n
        dist = np.maximum(1.0 - m / (row_sum[rows] + row_sum[cols] - m), 0.0).astype(np.float32)
        if max_distance is not None:
            keep = dist <= max_distance
            rows, cols, dist = rows[keep], cols[keep], dist[keep]
        out_rows.append(rows)
        out_cols.append(cols)
        out_vals.append(dist)
    rows = np.concatenate(out_rows) if out_rows else np.empty(0, np.int64)
    cols = np.concatenate(out_cols) if out_cols else np.empty(0, np.int64)
    vals = np.concatenate(out_vals) if out_vals else np.empty(0, np.float32)
    del out_rows, out_cols, out_vals
    return _symmetric_csr(rows, cols, vals, n, row_order)


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
    return _csr(indptr, all_cols[order], all_vals[order], n)


def _check_ks(k1: int, k2: int) -> None:
    if int(k1) < 1:
        raise UserError(f"k1 must be >= 1, got {k1}; the usual value is 30")
    if int(k2) < 1:
        raise UserError(f"k2 must be >= 1, got {k2}; the usual value is 6")


def jaccard_distance(
    features: np.ndarray,
    k1: int = 30,
    k2: int = 6,
    max_distance: float | None = None,
    ranks: np.ndarray | None = None,
    index: str = "auto",
    row_order: str = "column",
    max_triples: int = DEFAULT_MAX_TRIPLES,
    num_threads: int | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> sp.csr_array:
    """Sparse k-reciprocal Jaccard distance between all samples (see the module docstring).

    Memory grows as ``O(N * k1 * k2)``; no ``N x N`` dense array is ever built.

    Args:
      features: ``[N, D]`` real features (L2-normalised inside; cosine geometry).
      k1: k-reciprocal neighbourhood size (30 in cluster-contrast / SpCL / MMT).
      k2: local query expansion size (6).
      max_distance: drop pairs farther than this (``None`` keeps all pairs with overlap).
      ranks: optional precomputed ``[N, >= max(k1 + 1, k2)]`` int64 neighbour ids (clamped to
        ``N``) of the normalised features, nearest first, ``-1`` = missing (e.g. from
        :func:`knn_search`); computed when ``None``.
      index: k-NN back-end for :func:`knn_search` (``"auto"``, ``"flat"``, ``"ivf"``).
      row_order: ``"column"`` or ``"distance"`` (see :func:`jaccard_from_encoding`).
      max_triples: temporary-memory cap per block of rows (triples of ~40 bytes each).
      num_threads: faiss threads (``None``: unchanged).
      seed: seed of an approximate index.
      normalize: L2-normalise the features (no copy is made when they already are unit rows);
        False trusts the caller.

    Returns:
      ``[N, N]`` float32 CSR of Jaccard distances in ``[0, 1)``; a pair not stored has
      distance 1 (or is farther than ``max_distance``). Explicit zeros are real distances 0.
    """
    _check_ks(k1, k2)
    x = check_features(features)
    x = as_unit_rows(x) if normalize else np.ascontiguousarray(x)
    n = x.shape[0]
    if n == 0:
        return _csr(np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), 0)
    need = max(min(int(k1) + 1, n), min(int(k2), n))
    if ranks is None:
        _, ranks = knn_search(
            x,
            need,
            index=index,
            normalize=False,
            num_threads=num_threads,
            seed=seed,
        )
    elif ranks.ndim != 2 or ranks.shape[0] != n or ranks.shape[1] < need:
        raise UserError(
            f"ranks: expected shape [{n}, >= {need}], got {ranks.shape}; pass the output of "
            "knn_search(features, max(k1 + 1, k2)) or leave ranks=None"
        )
    ranks = ranks.astype(np.int64, copy=False)
    recip = k_reciprocal_sets(ranks, int(k1))
    recip_half = k_reciprocal_sets(ranks, half_k(int(k1)))
    expanded = expand_reciprocal_sets(recip, recip_half, max_triples=max_triples)
    del recip, recip_half
    v = encode_neighbourhoods(x, expanded)
    del expanded, x
    w = local_query_expansion(v, ranks, int(k2))
    del v
    return jaccard_from_encoding(
        w, max_distance=max_distance, row_order=row_order, max_triples=max_triples
    )


def jaccard_distance_dense_reference(
    features: np.ndarray, k1: int = 30, k2: int = 6, ranks: np.ndarray | None = None
) -> np.ndarray:
    """Reference only: the dense ``N x N`` k-reciprocal Jaccard distance, for tests/benchmarks.

    Follows the structure of the dense ``compute_jaccard_distance`` popularised by SpCL and
    cluster-contrast: per-row k-reciprocal sets, dense float32 encoding ``V``, dense query
    expansion, an inverted index built column by column, and ``1 - m / (2 - m)`` with
    ``m = sum(min)`` (rows of ``V`` sum to 1). Needs about ``3 N^2 * 4`` bytes.

    Args:
      features: ``[N, D]`` real features (L2-normalised inside).
      k1, k2: as in :func:`jaccard_distance`.
      ranks: optional ``[N, >= k1 + 1]`` exact neighbour ids; computed with ``faiss.knn`` (as the
        dense implementations do) when None.

    Returns:
      ``[N, N]`` float32 dense Jaccard distances in ``[0, 1]``.
    """
    _check_ks(k1, k2)
    x = as_unit_rows(check_features(features))
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 0), np.float32)
    if ranks is None:
        _, ranks = knn_search(
            x, max(min(k1 + 1, n), min(k2, n)), index="faiss_flat", normalize=False
        )

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = ranks[i, : k + 1]
        backward = ranks[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    nn_k1 = [reciprocal(i, k1) for i in range(n)]
    nn_half = [reciprocal(i, half_k(k1)) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        base = nn_k1[i]
        expansion = base
        for cand in base:
            cand_set = nn_half[cand]
            if len(np.intersect1d(cand_set, base)) > 2.0 / 3.0 * len(cand_set):
                expansion = np.append(expansion, cand_set)
        expansion = np.unique(expansion)
        dist = 2.0 - 2.0 * (x[expansion] @ x[i])
        weights = np.exp(-(dist - dist.min()))
        v[i, expansion] = weights / weights.sum()
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i, :] = np.mean(v[ranks[i, :k2], :], axis=0)
        v = v_qe
        del v_qe
    inv_index = [np.where(v[:, h] != 0)[0] for h in range(n)]
    jac = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros(n, dtype=np.float32)
        nonzero = np.where(v[i, :] != 0)[0]
        for h in nonzero:
            rows = inv_index[h]
            temp_min[rows] += np.minimum(v[i, h], v[rows, h])
        jac[i] = 1.0 - temp_min / (2.0 - temp_min)
    jac[jac < 0] = 0.0
    return jac
