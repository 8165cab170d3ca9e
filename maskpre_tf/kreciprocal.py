"""k-reciprocal encoding and Jaccard distance on sparse rows (Zhong, Zheng, Cao, Li; CVPR 2017).

The one implementation behind pseudo labels (:mod:`maskpre_tf.clustering.jaccard`: every sample
against every sample, pruned at DBSCAN's eps) and re-ranking (:mod:`maskpre_tf.evaluation.rerank`:
query rows against gallery rows). It starts from neighbour lists ``ranks`` ``[N, K]`` (int64
sample ids, nearest first, ``-1`` = missing) and a function giving the original distance
``d(i, j)`` of any pair:

1. ``N(i, k)``: the first ``|N(i, k)|`` entries of ``ranks[i]``; how many is the *convention*
   (below). The sample itself is normally the first entry.
2. k-reciprocal set ``R(i, k) = {j in N(i, k) : i in N(j, k)}`` (Eq. 2 of the paper).
3. Expansion (Eq. 7): ``R*(i)`` is ``R(i, k1)`` joined with every ``R(c, k1/2)``, ``c in R(i, k1)``,
   with ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|``; ``k1/2`` is :func:`half_k`.
4. Encoding (Eq. 8, normalised as in the authors' code): ``V[i, j] = exp(-d(i, j)) /
   sum_{j' in R*(i)} exp(-d(i, j'))`` for ``j in R*(i)``, 0 elsewhere; rows sum to 1.
5. Local query expansion (Eq. 12): ``V'[i]`` = mean of ``V[j]`` over the first ``k2`` entries of
   ``ranks[i]``; skipped when ``k2 == 1``.
6. Jaccard distance (Eq. 11): ``d_J(i, j) = 1 - m / (2 - m)`` with ``m = sum_h min(V'[i, h],
   V'[j, h])``; ``sum_h max = 2 - m`` because rows of ``V'`` sum to 1 (the authors' code writes it
   so). Clipped at 0. A pair whose rows share no column has ``d_J = 1`` and is never produced.

Conventions (:data:`CONVENTIONS`), the sizes of the neighbourhoods in steps 1-3:

* ``"zhong"``: ``|N(i, k1)| = k1 + 1`` and ``|N(c, k1/2)| = k1/2 + 1``, self included: the
  paper's released ``re_ranking`` code, which torchreid and fast-reid ship; lists are not cut.
* ``"cluster_contrast"``: ``|N(i, k1)| = k1`` and ``|N(c, k1/2)| = k1/2 + 1``: cluster-contrast's
  ``compute_jaccard_distance`` (``clustercontrast/utils/faiss_rerank.py``) asks faiss for ``k1``
  neighbours (self included), so its ``initial_rank[i, :k1 + 1]`` holds ``k1``; every list,
  the query-expansion one too, is cut at ``k1`` entries.

Every step keeps only non-zero entries: ``R``, ``R*``, ``V`` and ``V'`` are CSR rows of size
``O(k1)`` (``O(k1 * k2)`` for ``V'``); the Jaccard step walks an inverted index (the columns of
``V'``) in blocks of rows whose temporary size is capped by ``max_triples``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from maskpre_tf.errors import UserError

#: Neighbourhood-size conventions, see the module docstring.
CONVENTIONS = ("zhong", "cluster_contrast")

#: Default cap on the temporary (row, column, value) triples held per block of rows.
DEFAULT_MAX_TRIPLES = 1_000_000

#: Float elements gathered per block by :func:`pair_dots`.
_GATHER_FLOATS = 1 << 20

#: ``pair_distance(rows, cols)``: original distances ``d(rows[p], cols[p])``, any float dtype.
PairDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def half_k(k1: int) -> int:
    """``round(k1 / 2)``, halves to even (``np.around``), as the released implementations do."""
    return int(np.around(k1 / 2))


def check_parameters(k1: int, k2: int, convention: str) -> None:
    """Raise :class:`UserError` unless ``k1, k2 >= 1`` and ``convention`` is known."""
    if int(k1) < 1:
        raise UserError(f"k1 must be >= 1, got {k1}; the usual value is 30 (20 for re-ranking)")
    if int(k2) < 1:
        raise UserError(f"k2 must be >= 1, got {k2}; the usual value is 6")
    if convention not in CONVENTIONS:
        raise UserError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def neighbourhood_sizes(k1: int, convention: str) -> tuple[int, int]:
    """``(|N(i, k1)|, |N(c, k1/2)|)``, self included, under ``convention``."""
    check_parameters(k1, 1, convention)
    if convention == "zhong":
        return int(k1) + 1, half_k(k1) + 1
    return int(k1), min(half_k(k1) + 1, int(k1))


def list_depth(k1: int, k2: int, convention: str) -> int:
    """Entries of each neighbour list the encoding reads (``ranks`` columns beyond are ignored)."""
    check_parameters(k1, k2, convention)
    return max(int(k1) + 1, int(k2)) if convention == "zhong" else int(k1)


def segment_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(starts[p], starts[p] + counts[p])`` for every ``p`` (int64)."""
    counts = counts.astype(np.int64, copy=False)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) + np.repeat(starts.astype(np.int64) - offsets, counts)


def row_blocks(costs: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows ``0..len(costs)`` into consecutive ``(start, stop)`` blocks of cost <= ``budget``.

    A single row whose cost exceeds the budget forms a block on its own.
    """
    n = len(costs)
    cum = np.concatenate(([0], np.cumsum(costs, dtype=np.int64)))
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        stop = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1
        bounds.append(min(max(stop, start + 1), n))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def build_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_array:
    """CSR array from its three arrays, with int32 index arrays when they fit."""
    fits = max(len(indices), *shape) < np.iinfo(np.int32).max
    idx_dtype = np.int32 if fits else np.int64
    return sp.csr_array(
        (data, indices.astype(idx_dtype, copy=False), indptr.astype(idx_dtype, copy=False)),
        shape=shape,
    )


def _bool_rows(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_array:
    """``[n, n]`` bool CSR with ones at ``(rows, cols)``; ``rows`` ascending, columns sorted."""
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n), dtype=np.int64)))
    return build_csr(indptr, cols, np.ones(len(cols), dtype=bool), (n, n))


def reciprocal_sets(ranks: np.ndarray, size: int, block_rows: int = 2048) -> sp.csr_array:
    """k-reciprocal sets ``R(i) = {j in N(i) : i in N(j)}`` with ``N(i) = ranks[i, :size]``.

    Args:
      ranks: ``[N, K]`` int64 neighbour ids, nearest first; ``-1`` marks a missing neighbour.
      size: neighbourhood size, self included (see :func:`neighbourhood_sizes`).
      block_rows: rows checked per step (temporary memory about ``block_rows * size^2 * 9`` B).

    Returns:
      ``[N, N]`` bool CSR array with sorted column indices; row ``i`` holds ``R(i)``.
    """
    n = ranks.shape[0]
    fwd = np.ascontiguousarray(ranks[:, :size])
    keep = np.zeros(fwd.shape, dtype=bool)
    for start in range(0, n, block_rows):
        f = fwd[start : start + block_rows]
        valid = f >= 0
        back = fwd[np.where(valid, f, 0)]  # [rows, size, size]
        me = np.arange(start, start + len(f), dtype=np.int64)[:, None, None]
        keep[start : start + len(f)] = valid & (back == me).any(axis=2)
    rows = np.repeat(np.arange(n, dtype=np.int64), keep.sum(axis=1))
    cols = np.sort(np.where(keep, fwd, np.iinfo(np.int64).max), axis=1)
    return _bool_rows(rows, cols[cols != np.iinfo(np.int64).max], n)


def expand_reciprocal_sets(
    recip: sp.csr_array, recip_half: sp.csr_array, max_triples: int = DEFAULT_MAX_TRIPLES
) -> sp.csr_array:
    """Expand each ``R(i, k1)`` with the candidates' ``R(c, k1/2)`` that mostly lie inside it.

    ``R(c, k1/2)`` is added to row ``i`` when ``|R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|``.

    Args:
      recip: ``[N, N]`` bool CSR, row ``i`` = ``R(i, k1)``, sorted columns.
      recip_half: ``[N, N]`` bool CSR, row ``c`` = ``R(c, k1/2)``.
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
    keys: list[np.ndarray] = [np.empty(0, np.int64)]
    for a, b in row_blocks(row_cost + np.diff(r_ptr), max_triples):
        p_row = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(r_ptr[a : b + 1]))
        p_cand = r_ind[r_ptr[a] : r_ptr[b]].astype(np.int64)
        p_key = p_row * n + p_cand  # sorted: rows ascending, columns sorted within rows
        t_len = h_len[p_cand]
        t_pair = np.repeat(np.arange(len(p_cand), dtype=np.int64), t_len)
        t_key = p_row[t_pair] * n + h_ind[segment_positions(h_ptr[p_cand], t_len)]
        pos = np.minimum(np.searchsorted(p_key, t_key), max(len(p_key) - 1, 0))
        inside = p_key[pos] == t_key if len(p_key) else np.zeros(0, dtype=bool)
        overlap = np.bincount(t_pair, weights=inside, minlength=len(p_cand))
        accept = overlap > 2.0 / 3.0 * t_len
        keys.append(np.unique(np.concatenate((p_key, t_key[accept[t_pair]]))))
    key = np.concatenate(keys)
    return _bool_rows(key // n, key % n, n)


def pair_dots(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``<a[rows[p]], b[cols[p]]>`` for every pair ``p``, gathered in bounded blocks.

    Args:
      a, b: ``[Na, D]`` and ``[Nb, D]`` float32 arrays.
      rows, cols: ``[P]`` int indices into ``a`` and ``b``.

    Returns:
      ``[P]`` float32 inner products.
    """
    out = np.empty(len(rows), dtype=np.float32)
    step = max(1, _GATHER_FLOATS // max(1, a.shape[1]))
    for s in range(0, len(rows), step):
        out[s : s + step] = np.einsum("pd,pd->p", a[rows[s : s + step]], b[cols[s : s + step]])
    return out


def encode(
    expanded: sp.csr_array, pair_distance: PairDistance, max_pairs: int = DEFAULT_MAX_TRIPLES
) -> sp.csr_array:
    """Soft k-reciprocal encoding ``V`` (step 4): softmax of ``-d`` over each row's ``R*(i)``.

    Args:
      expanded: ``[N, N]`` bool CSR, row ``i`` = ``R*(i)``.
      pair_distance: original distances of ``(row, column)`` pairs (computed in float64 here).
      max_pairs: pairs processed per block of rows (bounds temporary memory).

    Returns:
      ``[N, N]`` float32 CSR with the pattern of ``expanded``; non-empty rows sum to 1.
    """
    indptr = expanded.indptr.astype(np.int64)
    cols = expanded.indices
    data = np.empty(len(cols), dtype=np.float32)
    for a, b in row_blocks(np.diff(indptr), max_pairs):
        lo, hi = indptr[a], indptr[b]
        lengths = np.diff(indptr[a : b + 1])
        if hi == lo:
            continue
        local = np.repeat(np.arange(b - a, dtype=np.int64), lengths)
        dist = np.asarray(pair_distance(local + a, cols[lo:hi]), dtype=np.float64)
        # Softmax of -dist per row, shifted by the row's smallest distance for stability.
        row_min = np.zeros(b - a)
        row_min[lengths > 0] = np.minimum.reduceat(dist, (indptr[a:b] - lo)[lengths > 0])
        w = np.exp(-(dist - row_min[local]))
        data[lo:hi] = w / np.bincount(local, weights=w, minlength=b - a)[local]
    return build_csr(indptr, cols, data, expanded.shape)


def local_query_expansion(v: sp.csr_array, ranks: np.ndarray, k2: int) -> sp.csr_array:
    """Average each row of ``v`` with its ``k2 - 1`` nearest neighbours' rows (step 5).

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
    nb = ranks[:, :k2]
    valid = nb >= 0
    counts = valid.sum(axis=1)
    q_data = np.repeat((1.0 / np.maximum(counts, 1)).astype(np.float32), counts)
    q_ptr = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    out = sp.csr_array(build_csr(q_ptr, nb[valid], q_data, (len(nb), v.shape[0])) @ v)
    out.sort_indices()
    return out


def k_reciprocal_encoding(
    ranks: np.ndarray,
    pair_distance: PairDistance,
    k1: int,
    k2: int,
    convention: str,
    max_triples: int = DEFAULT_MAX_TRIPLES,
) -> sp.csr_array:
    """Steps 1-5: the query-expanded k-reciprocal encoding ``V'`` of every sample.

    Args:
      ranks: ``[N, K]`` int neighbour ids, nearest first, ``-1`` = missing; at least
        ``min(N, list_depth(k1, k2, convention))`` columns (more are ignored).
      pair_distance: original distance of any ``(row, column)`` pairs.
      k1, k2: neighbourhood and query-expansion sizes.
      convention: one of :data:`CONVENTIONS`.
      max_triples: temporary-memory cap per block of rows.

    Returns:
      ``[N, N]`` float32 CSR with sorted columns; non-empty rows sum to 1.
    """
    ranks = np.asarray(ranks).astype(np.int64, copy=False)[:, : list_depth(k1, k2, convention)]
    size, size_half = neighbourhood_sizes(k1, convention)
    expanded = expand_reciprocal_sets(
        reciprocal_sets(ranks, size), reciprocal_sets(ranks, size_half), max_triples
    )
    v = encode(expanded, pair_distance, max_triples)
    return local_query_expansion(v, ranks, int(k2))


@dataclass(frozen=True)
class ColumnIndex:
    """Inverted index of an encoding ``W`` ``[N, M]``: its columns, rows ascending in each.

    Column ``h`` holds rows ``rows[ptr[h]:ptr[h + 1]]`` with values ``vals[...]``;
    ``entry_pos[e]`` is where the ``e``-th CSR entry of ``W`` sits in that layout.
    """

    ptr: np.ndarray
    rows: np.ndarray
    vals: np.ndarray
    entry_pos: np.ndarray
    num_rows: int


def column_index(w: sp.csr_array) -> ColumnIndex:
    """Build the :class:`ColumnIndex` of a CSR encoding with sorted column indices."""
    nnz = w.nnz
    entry_ids = np.arange(1, nnz + 1, dtype=np.int64)  # 1-based: a 0 would be dropped
    wc = sp.csr_array((entry_ids, w.indices, w.indptr), shape=w.shape).tocsc()
    wc.sort_indices()
    entry_pos = np.empty(nnz, dtype=np.int64)
    entry_pos[wc.data - 1] = np.arange(nnz, dtype=np.int64)
    return ColumnIndex(
        ptr=wc.indptr.astype(np.int64),
        rows=wc.indices,
        vals=w.data[wc.data - 1],
        entry_pos=entry_pos,
        num_rows=w.shape[0],
    )


def jaccard_blocks(
    a: sp.csr_array,
    index: ColumnIndex,
    within: bool = False,
    max_triples: int = DEFAULT_MAX_TRIPLES,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Jaccard distances (step 6) of every pair of rows that shares a column, block by block.

    Every stored ``a[i, h]`` meets every row ``j`` of column ``h`` of the indexed encoding ``B``;
    the ``min`` terms are summed per pair ``(i, j)`` with one sort of int64 keys per block.

    Args:
      a: ``[Na, M]`` float32 CSR rows with sorted columns (e.g. a slice of query rows).
      index: :func:`column_index` of ``B`` ``[Nb, M]``.
      within: ``a`` is ``B`` itself; only pairs ``j >= i`` are produced (the distance is
        symmetric), from each entry's own position in its column onwards.
      max_triples: cap on the (row, column, value) triples held per block of rows.

    Yields:
      ``(rows, cols, dist)``: int64 row of ``a``, int64 row of ``B`` and float32 distance in
      ``[0, 1)`` of the pairs with an overlap, one block of ``a``'s rows at a time.
    """
    r_ptr = a.indptr.astype(np.int64)
    cols = a.indices.astype(np.int64)
    if within and a.nnz != len(index.entry_pos):
        raise ValueError("within=True needs the encoding the column index was built from")
    begin = index.entry_pos if within else index.ptr[cols]
    entry_cost = index.ptr[cols + 1] - begin
    cum = np.concatenate(([0], np.cumsum(entry_cost, dtype=np.int64)))
    nb = index.num_rows
    for s, e in row_blocks(cum[r_ptr[1:]] - cum[r_ptr[:-1]], max_triples):
        lo, hi = r_ptr[s], r_ptr[e]
        t_len = entry_cost[lo:hi]
        if not t_len.sum():
            continue
        pos = segment_positions(begin[lo:hi], t_len)
        e_row = np.repeat(np.arange(s, e, dtype=np.int64), np.diff(r_ptr[s : e + 1]))
        key = np.repeat(e_row * nb, t_len) + index.rows[pos]
        t_min = np.minimum(np.repeat(a.data[lo:hi], t_len), index.vals[pos])
        del pos
        order = np.argsort(key)
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        m = np.add.reduceat(t_min[order], starts, dtype=np.float64)
        key = key[starts]
        del order, starts, t_min
        dist = np.maximum(1.0 - m / (2.0 - m), 0.0).astype(np.float32)
        yield key // nb, key % nb, dist
