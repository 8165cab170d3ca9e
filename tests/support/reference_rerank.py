"""Dense reference implementations of k-reciprocal re-ranking, for tests and benchmarks.

Nothing here is part of the package. Each function needs ``O(N^2)`` memory:

* :func:`re_ranking_rows`: torchreid's re-ranking from the textbook Jaccard distance of
  ``reference_jaccard.py`` (:func:`reference_jaccard.jaccard_rows`), in float64 working
  distances.
* :func:`re_ranking_dense`: the vectorised dense re-ranking maskpre-tf shipped before the sparse
  path (one dense ``(Nq + Ng)^2`` float32 working matrix, ~2 GB at Market-1501 size): the
  baseline that ``benchmarks/rerank_bench.py`` times and compares against.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from reference_jaccard import jaccard_rows

_CHUNK_ELEMENTS = 1 << 21
_JOIN_BUDGET = 1 << 22


def re_ranking_rows(
    qg: np.ndarray, qq: np.ndarray, gg: np.ndarray, k1: int, k2: int, lam: float
) -> np.ndarray:
    """torchreid's ``re_ranking`` by :func:`jaccard_rows`, working distances in float64.

    ``D = [[qq, qg], [qg^T, gg]]`` squared, each column divided by its maximum, transposed; full
    stable argsort neighbour lists; Jaccard of the query rows; ``(1 - lam) J + lam d``.
    """
    nq = qg.shape[0]
    full = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64) ** 2
    peak = full.max(axis=0)
    dist = (full / np.where(peak > 0, peak, 1.0)).T
    rank = np.argsort(dist, axis=1, kind="stable")
    jac = jaccard_rows(rank, lambda i, js: dist[i, js], k1, k2, "zhong", rows=range(nq))
    return jac[:, nq:] * (1 - lam) + dist[:nq, nq:] * lam


# ------------------------------------------------------------------------------------------
# The dense re-ranking shipped before the sparse path (vectorised; one dense [N, N] matrix).
# ------------------------------------------------------------------------------------------


def _index_bits(n: int) -> int:
    """Number of bits needed to store the indices 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def _orderable_uint32(values: np.ndarray) -> np.ndarray:
    """Map float32 values to uint32 codes whose unsigned order equals the float order.

    Args:
      values: float32 array of any shape, without NaN.

    Returns:
      uint32 array of the same shape. Negative zero is treated as positive zero, so equal
      floats always get equal codes; -inf and +inf map to the ends of the range.
    """
    bits = (values + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 == +0.0
    sign = bits >> np.uint32(31)
    flip = (np.uint32(0) - sign) | np.uint32(0x80000000)  # negatives: all bits; else the sign
    return bits ^ flip


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """Pack ``(value, column)`` of a float32 block into one uint64 key per element.

    Keys compare like the pair ``(value, column)``: sorting a row of keys is a stable argsort
    of that row of values (ties broken by the lower column).

    Args:
      values: float32 [rows, cols] block, without NaN.

    Returns:
      uint64 [rows, cols] keys; ``key & (2**index_bits(cols) - 1)`` recovers the column.
    """
    cols = values.shape[1]
    col_bits = _index_bits(cols)
    if 32 + col_bits > 64:
        raise ValueError(f"cannot pack {cols} columns into 64-bit keys")
    keys = _orderable_uint32(values).astype(np.uint64)
    keys <<= np.uint64(col_bits)
    keys |= np.arange(cols, dtype=np.uint64)[None, :]
    return keys


def _row_chunks(num_rows: int, num_cols: int) -> list[tuple[int, int]]:
    """Split ``range(num_rows)`` into ``(start, stop)`` chunks of about ``_CHUNK_ELEMENTS``."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, num_cols))
    return [(s, min(num_rows, s + rows)) for s in range(0, num_rows, rows)]


def _copy_transposed(dst: np.ndarray, src: np.ndarray, tile: int = 512) -> None:
    """``dst[...] = src.T`` tile by tile (a plain strided copy of a large matrix is cache-bound).

    Args:
      dst: [m, n] destination (a view is fine).
      src: [n, m] source.
    """
    m, n = dst.shape
    for i in range(0, m, tile):
        for j in range(0, n, tile):
            dst[i : i + tile, j : j + tile] = src[j : j + tile, i : i + tile].T


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest columns of each row, nearest first (module tie rule).

    Args:
      dist: float32 [N, M] distances without NaN.
      k: number of neighbours, 1 <= k <= M.

    Returns:
      int64 [N, k].
    """
    n, m = dist.shape
    col_mask = np.uint64((1 << _index_bits(m)) - 1)
    out = np.empty((n, k), dtype=np.int64)
    for start, stop in _row_chunks(n, m):
        keys = _sort_keys(dist[start:stop])
        if k < m:
            keys = np.partition(keys, k - 1, axis=1)[:, :k]
        keys.sort(axis=1)
        out[start:stop] = (keys & col_mask).astype(np.int64)
    return out


def _reciprocal(neighbours: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal neighbour sets R(i, k) = {j in N(i, k) : i in N(j, k)}.

    ``N(i, k)`` are the first ``k + 1`` entries of row ``i`` of ``neighbours`` (the point
    itself usually among them), as in Zhong et al.

    Args:
      neighbours: int64 [N, >= k + 1] nearest-first neighbour lists.
      k: the k of the definition.

    Returns:
      ``(candidates, keep)``: int64 [N, k + 1] forward lists and bool [N, k + 1] flags marking
      the reciprocal entries.
    """
    n = neighbours.shape[0]
    fwd = neighbours[:, : k + 1]
    own = np.arange(n, dtype=np.int64)[:, None]
    codes = np.sort((own * n + fwd).ravel())  # pairs (i, j): j in N(i, k)
    back = (fwd * n + own).ravel()  # pairs (j, i) to look up
    pos = np.minimum(np.searchsorted(codes, back), codes.size - 1)
    keep = (codes[pos] == back).reshape(fwd.shape)
    return fwd, keep


def _encoding(dist: np.ndarray, neighbours: np.ndarray, k1: int) -> sp.csr_matrix:
    """Gaussian-weighted k-reciprocal encoding vectors V (Zhong et al., Eq. 8 and Sec. 4.2).

    For each point i: R = R(i, k1); every j in R whose half-size set R(j, round(k1 / 2)) shares
    more than 2/3 of its members with R adds that set; V[i, j] = exp(-d(i, j)) over the
    resulting set, normalised to sum 1.

    Args:
      dist: float32 [N, N] row-normalised distances.
      neighbours: int64 [N, >= k1 + 1] nearest-first neighbour lists of ``dist`` (shorter lists
        when N is small are fine).
      k1: the k-reciprocal size.

    Returns:
      float32 CSR [N, N] with rows summing to 1.
    """
    n = dist.shape[0]
    k1_eff = min(k1, neighbours.shape[1] - 1)
    k_half = min(int(np.around(k1 / 2.0)), neighbours.shape[1] - 1)
    fwd, keep = _reciprocal(neighbours, k1_eff)
    hfwd, hkeep = _reciprocal(neighbours, k_half)
    r_i = np.repeat(np.arange(n, dtype=np.int64), fwd.shape[1])[keep.ravel()]
    r_j = fwd.ravel()[keep.ravel()]
    r_codes = np.sort(r_i * n + r_j)
    # For every candidate j of R(i): its half-size set, and how much of it lies in R(i).
    cand_set = hfwd[r_j]  # [|R|, k_half + 1]
    cand_keep = hkeep[r_j]
    lookup = r_i[:, None] * n + cand_set
    pos = np.minimum(np.searchsorted(r_codes, lookup), r_codes.size - 1)
    inside = (r_codes[pos] == lookup) & cand_keep
    accept = inside.sum(axis=1) > 2.0 / 3.0 * cand_keep.sum(axis=1)
    add_i = np.broadcast_to(r_i[:, None], cand_set.shape)[accept][cand_keep[accept]]
    add_j = cand_set[accept][cand_keep[accept]]
    codes = np.unique(np.concatenate([r_codes, add_i * n + add_j]))
    e_i, e_j = codes // n, codes % n
    weight = np.exp(-dist[e_i, e_j].astype(np.float64))
    weight /= np.bincount(e_i, weights=weight, minlength=n)[e_i]
    return sp.csr_matrix((weight.astype(np.float32), (e_i, e_j)), shape=(n, n))


def _jaccard(v: sp.csr_matrix, num_query: int) -> np.ndarray:
    """Jaccard distance between query rows and gallery rows of the encoding V.

    d_J(i, j) = 1 - s / (2 - s) with s = sum_k min(V[i, k], V[j, k]) (Zhong et al., Eq. 11 in
    the form of their released code, which assumes rows summing to 1).

    Args:
      v: float32 CSR [N, N]; rows ``:num_query`` are queries, the rest gallery.
      num_query: number of query rows.

    Returns:
      float32 [num_query, N - num_query].
    """
    n = v.shape[0]
    num_g = n - num_query
    vq = v[:num_query].tocsr()
    vg = v[num_query:].tocsc()  # column k lists the gallery items using feature k
    col_count = np.diff(vg.indptr)
    q_rows = np.repeat(np.arange(num_query, dtype=np.int64), np.diff(vq.indptr))
    pairs_per_query = np.bincount(q_rows, weights=col_count[vq.indices], minlength=num_query)
    out = np.empty((num_query, num_g), dtype=np.float32)
    max_rows = max(1, _CHUNK_ELEMENTS // max(1, num_g))
    cum = np.cumsum(pairs_per_query)
    start = 0
    while start < num_query:  # chunks bounded by joined triples and by output rows
        done = cum[start - 1] if start else 0.0
        stop = int(np.searchsorted(cum, done + _JOIN_BUDGET, side="right"))
        stop = min(max(stop, start + 1), start + max_rows, num_query)
        lo, hi = vq.indptr[start], vq.indptr[stop]
        feat = vq.indices[lo:hi]
        val = vq.data[lo:hi]
        row = q_rows[lo:hi] - start
        cnt = col_count[feat]
        rep = np.repeat(np.arange(feat.size), cnt)
        offset = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pos = vg.indptr[feat][rep] + offset
        shared = np.minimum(val[rep], vg.data[pos]).astype(np.float64)
        flat = row[rep] * num_g + vg.indices[pos]
        s = np.bincount(flat, weights=shared, minlength=(stop - start) * num_g)
        s = s.reshape(stop - start, num_g)
        ratio = 2.0 - s
        np.divide(s, ratio, out=ratio)
        np.subtract(1.0, ratio, out=out[start:stop], casting="same_kind")
        start = stop
    return out


def re_ranking_dense(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking on a dense ``[N, N]`` working matrix, ``N = Nq + Ng``.

    The same steps and conventions as :func:`maskpre_tf.evaluation.rerank.re_ranking` (see
    there); about 2 GB beyond the inputs at Market-1501 size. Returns float32 ``[Nq, Ng]``.
    """
    qg = np.asarray(q_g_dist, dtype=np.float32)
    qq = np.asarray(q_q_dist, dtype=np.float32)
    gg = np.asarray(g_g_dist, dtype=np.float32)
    num_q, num_g = qg.shape
    n = num_q + num_g

    # Step 1: d = transpose(D^2 / column max of D^2), built directly as rows of D^T.
    d = np.empty((n, n), dtype=np.float32)
    _copy_transposed(d[:num_q, :num_q], qq)
    d[:num_q, num_q:] = qg
    _copy_transposed(d[num_q:, :num_q], qg)
    _copy_transposed(d[num_q:, num_q:], gg)
    for start, stop in _row_chunks(n, n):
        block = d[start:stop]
        np.square(block, out=block)
        peak = block.max(axis=1, keepdims=True)
        block /= np.where(peak > 0, peak, np.float32(1.0))
    del qq, gg

    # Steps 2-3: neighbour lists and the encoding.
    k1 = int(k1)
    k2 = int(k2)
    depth = min(n, max(k1 + 1, int(np.around(k1 / 2.0)) + 1, k2))
    neighbours = _nearest(d, depth)
    v = _encoding(d, neighbours, k1)
    original = d[:num_q, num_q:].copy()
    del d

    # Step 4: local query expansion, V <- A V with A averaging the k2 nearest rows.
    if k2 != 1:
        k2_eff = min(k2, n)
        cols = neighbours[:, :k2_eff].ravel()
        rows = np.repeat(np.arange(n, dtype=np.int64), k2_eff)
        avg = sp.csr_matrix(
            (np.full(rows.size, 1.0 / k2_eff, dtype=np.float32), (rows, cols)), shape=(n, n)
        )
        v = (avg @ v).tocsr()
    del neighbours

    # Steps 5-6.
    jaccard = _jaccard(v, num_q)
    lam = np.float32(lambda_value)
    jaccard *= np.float32(1.0) - lam
    original *= lam
    jaccard += original
    return jaccard
