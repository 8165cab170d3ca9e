"""The working distance of k-reciprocal re-ranking over the stacked query and gallery images.

torchreid's ``re_ranking`` (after Zhong et al., CVPR 2017) stacks the ``N = Nq + Ng`` images,
``D = [[q_q, q_g], [q_g^T, g_g]]``, and works with ``d(i, j) = D(j, i)^2 / M_i``,
``M_i = max_k D(k, i)^2`` (a zero maximum counts as 1): row ``i`` of ``d`` is column ``i`` of
``D``, squared and divided by its maximum. Here ``D`` is never built. A *source* hands out tiles
``D^T[rows, cols]`` (each side within the queries or within the gallery) and single pairs:

* :class:`MatrixDistances` reads them from the three given matrices;
* :class:`FeatureDistances` computes them from embeddings (BLAS products); ``D`` is symmetric.

:func:`nearest_neighbours` finds every image's nearest images by ``d`` (ties: lower index first,
a stable sort of the row) and every ``M_i`` in one pass over tiles of ``D^T``, only the upper
block triangle for a symmetric source (each tile then serves its rows and its columns). Each
row keeps its ``depth + margin`` smallest ``D^2`` as packed ``(value bits, column)`` uint64 keys,
which order exactly like ``(value, column)``; the final order is by ``d`` computed from them. A
row whose candidates end in a tie of ``d`` at the cut is re-done from its full row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maskpre_tf.evaluation.distance import (
    Embeddings,
    block_distances,
    pair_distances,
    row_chunks,
)

#: Rows (and columns) of one tile of the neighbour search.
TILE_EDGE = 2048

#: Candidates kept per row beyond the ``depth`` wanted, to detect ties at the cut.
_MARGIN = 4

Span = tuple[int, int]


def _split(span: Span, num_query: int) -> tuple[bool, slice]:
    """``(is a query span, local slice)`` of a span of stacked ids within one split."""
    start, stop = span
    if stop <= num_query:
        return True, slice(start, stop)
    return False, slice(start - num_query, stop - num_query)


def _per_block(
    rows: np.ndarray,
    cols: np.ndarray,
    num_query: int,
    value: Callable[[bool, bool, np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """``out[p] = value(row is a query, col is a query, local row, local col)`` per pair.

    ``rows``/``cols`` are int64 stacked ids (queries first); local ids count within the split.
    """
    out = np.empty(len(rows), dtype=np.float32)
    row_q, col_q = rows < num_query, cols < num_query
    for rq in (True, False):
        for cq in (True, False):
            sel = np.flatnonzero((row_q == rq) & (col_q == cq))
            if len(sel):
                r = rows[sel] - (0 if rq else num_query)
                c = cols[sel] - (0 if cq else num_query)
                out[sel] = value(rq, cq, r, c)
    return out


class MatrixDistances:
    """``D^T`` read from torchreid's three float32 blocks ``q_g [Nq, Ng]``, ``q_q``, ``g_g``."""

    symmetric = False

    def __init__(self, qg: np.ndarray, qq: np.ndarray, gg: np.ndarray) -> None:
        self.qg, self.qq, self.gg = qg, qq, gg
        self.num_query, self.num_gallery = qg.shape

    def _block(self, row_q: bool, col_q: bool) -> tuple[np.ndarray, bool]:
        """The matrix holding ``D^T[row side, col side]`` and whether it is stored transposed."""
        if row_q and not col_q:
            return self.qg, False  # D^T[q, g] = D[g, q]^T = q_g
        return {(True, True): self.qq, (False, True): self.qg, (False, False): self.gg}[
            (row_q, col_q)
        ], True

    def tile(self, rows: Span, cols: Span) -> np.ndarray:
        """float32 ``D^T[rows, cols]``, a fresh C-contiguous array (callers write to it)."""
        (rq, r), (cq, c) = _split(rows, self.num_query), _split(cols, self.num_query)
        mat, transposed = self._block(rq, cq)
        return np.array(mat[c, r].T if transposed else mat[r, c], dtype=np.float32, order="C")

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 ``D^T[rows[p], cols[p]]`` of single pairs of stacked ids."""

        def value(rq: bool, cq: bool, r: np.ndarray, c: np.ndarray) -> np.ndarray:
            mat, transposed = self._block(rq, cq)
            return mat[c, r] if transposed else mat[r, c]

        return _per_block(rows, cols, self.num_query, value)


class FeatureDistances:
    """``D`` computed from query and gallery :class:`Embeddings` of one metric."""

    symmetric = True

    def __init__(self, q: Embeddings, g: Embeddings) -> None:
        self.q, self.g = q, g
        self.num_query, self.num_gallery = len(q), len(g)

    def _side(self, is_query: bool) -> Embeddings:
        return self.q if is_query else self.g

    def tile(self, rows: Span, cols: Span) -> np.ndarray:
        """float32 ``D[rows, cols]``, a fresh C-contiguous array."""
        (rq, r), (cq, c) = _split(rows, self.num_query), _split(cols, self.num_query)
        a, b = self._side(rq), self._side(cq)
        return block_distances(a.rows(r.start, r.stop), b.rows(c.start, c.stop))

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 ``D[rows[p], cols[p]]`` of single pairs of stacked ids."""

        def value(rq: bool, cq: bool, r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return pair_distances(self._side(rq), self._side(cq), r, c)

        return _per_block(rows, cols, self.num_query, value)


Source = MatrixDistances | FeatureDistances


def spans(num_query: int, num_gallery: int, edge: int) -> list[Span]:
    """Consecutive spans of at most ``edge`` stacked ids, none crossing the query/gallery cut."""
    gallery = [(s + num_query, e + num_query) for s, e in row_chunks(num_gallery, 1, edge)]
    return row_chunks(num_query, 1, edge) + gallery


def smallest_columns(block: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` smallest entries of each row, smallest first, ties by lower column.

    Args:
      block: ``[b, M]`` float32 without NaN.
      k: ``1 <= k <= M``.

    Returns:
      ``[b, k]`` int64 column ids.
    """
    kth = np.partition(block, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(block <= kth[:, None])  # k or more candidates per row
    order = np.lexsort((cols, block[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    return cols[rank < k].reshape(block.shape[0], k).astype(np.int64, copy=False)


def _pack(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """uint64 keys ``(bits of float32 value >= 0) << 32 | id`` that order like ``(value, id)``."""
    keys = values.astype(np.float32).view(np.uint32).astype(np.uint64) << np.uint64(32)
    return keys | ids.astype(np.uint64)


class _Candidates:
    """Each row's ``m`` smallest ``(D^2, column)`` keys seen so far, and its running ``max D^2``."""

    def __init__(self, n: int, m: int) -> None:
        self.keys = np.full((n, m), np.iinfo(np.uint64).max, dtype=np.uint64)
        self.cut = np.full(n, np.inf, dtype=np.float32)  # D^2 of each row's m-th key
        self.peak = np.zeros(n, dtype=np.float32)

    def merge(self, rows: np.ndarray, keys: np.ndarray) -> None:
        """Merge candidate ``keys`` of stacked ``rows`` (any order, no pair seen before)."""
        if not len(rows):
            return
        m = self.keys.shape[1]
        touched = np.unique(rows)
        all_rows = np.concatenate((np.repeat(touched, m), rows))
        all_keys = np.concatenate((self.keys[touched].ravel(), keys))
        order = np.lexsort((all_keys, all_rows))
        sorted_rows = all_rows[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_rows, sorted_rows)
        best = all_keys[order[rank < m]].reshape(len(touched), m)
        self.keys[touched] = best
        last = best[:, -1]
        filled = last != np.iinfo(np.uint64).max
        cut = (last >> np.uint64(32)).astype(np.uint32).view(np.float32)
        self.cut[touched] = np.where(filled, cut, np.float32(np.inf))

    def absorb(self, row0: int, col0: int, sq: np.ndarray, both_sides: bool) -> None:
        """Take in a tile ``sq = D^T[row0 :, col0 :]^2`` for its rows (and its columns).

        Only entries at most each row's current cut can enter its list, so once every row
        has a list (after the diagonal tiles) few entries are looked at beyond one comparison.
        """
        r_end, c_end = row0 + sq.shape[0], col0 + sq.shape[1]
        np.maximum(self.peak[row0:r_end], sq.max(axis=1), out=self.peak[row0:r_end])
        m = self.keys.shape[1]
        rows, keys = _entries(sq, self.cut[row0:r_end], col0, m)
        rows += row0
        if both_sides:  # the mirror entries D^T[col0 :, row0 :] = sq^T (symmetric source)
            np.maximum(self.peak[col0:c_end], sq.max(axis=0), out=self.peak[col0:c_end])
            mirror_rows, mirror_keys = _entries(sq.T, self.cut[col0:c_end], row0, m)
            rows = np.concatenate((rows, mirror_rows + col0))
            keys = np.concatenate((keys, mirror_keys))
        self.merge(rows, keys)


def _entries(sq: np.ndarray, cut: np.ndarray, col0: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries of a tile that can enter its rows' lists: ``(local rows, keys)``.

    An entry can enter if it is at most its row's cut. When no row has a list yet (infinite
    cuts), only each row's ``m`` smallest entries are returned.
    """
    if np.isinf(cut).all() and sq.shape[1] > m:
        keys = _pack(sq, np.arange(col0, col0 + sq.shape[1]))
        keys = np.partition(keys, m - 1, axis=1)[:, :m]
        return np.repeat(np.arange(sq.shape[0]), m), keys.ravel()
    r, c = np.nonzero(sq <= cut[:, None])
    return r, _pack(sq[r, c], c + col0)


def _squared(src: Source, rows: Span, cols: Span) -> np.ndarray:
    """float32 ``D^T[rows, cols] ** 2``."""
    sq = src.tile(rows, cols)
    np.square(sq, out=sq)
    return sq


def working_block(src: Source, peak: np.ndarray, rows: Span, cols: Span) -> np.ndarray:
    """float32 ``d[rows, cols] = D^T[rows, cols]^2 / M_rows`` (``peak`` = the ``M_i``)."""
    d = _squared(src, rows, cols)
    d /= peak[rows[0] : rows[1], None]
    return d


def working_pairs(src: Source, peak: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float32 ``d[rows[p], cols[p]]`` of single pairs of stacked ids."""
    d = src.pairs(rows, cols)
    np.square(d, out=d)
    d /= peak[rows]
    return d


def nearest_neighbours(
    src: Source, depth: int, edge: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` nearest stacked images of every image by ``d``, and every ``M_i``.

    Args:
      src: a distance source.
      depth: neighbours per image, ``1 <= depth <= N``.
      edge: tile edge (default :data:`TILE_EDGE`; memory about ``edge^2 * 40`` bytes a tile).

    Returns:
      ``(ranks, peak)``: ``[N, depth]`` int64 stacked ids, nearest first (ties: lower id), and
      ``[N]`` float32 ``M_i`` (row maxima of ``D^T ** 2``, zeros replaced by 1).
    """
    nq, n = src.num_query, src.num_query + src.num_gallery
    m = min(n, depth + _MARGIN)
    found = _Candidates(n, m)
    tiles = spans(nq, src.num_gallery, TILE_EDGE if edge is None else edge)
    for a in tiles:  # diagonal tiles first: every row starts with a finite cut
        found.absorb(a[0], a[0], _squared(src, a, a), both_sides=False)
    for i, a in enumerate(tiles):
        for b in tiles[i + 1 :] if src.symmetric else tiles[:i] + tiles[i + 1 :]:
            found.absorb(a[0], b[0], _squared(src, a, b), both_sides=src.symmetric)
    keys, peak = found.keys, found.peak
    peak[peak <= 0] = 1.0
    keys.sort(axis=1)
    ids = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    d = (keys >> np.uint64(32)).astype(np.uint32).view(np.float32) / peak[:, None]
    del keys
    order = np.lexsort((ids, d))
    ids, d = np.take_along_axis(ids, order, 1), np.take_along_axis(d, order, 1)
    ranks = ids[:, :depth].copy()
    if m < n:  # a tie of d at the cut may continue beyond the candidates: redo those rows
        for row in np.flatnonzero(d[:, m - 1] <= d[:, depth - 1]):
            full = np.hstack([working_block(src, peak, (row, row + 1), b) for b in tiles])
            ranks[row] = smallest_columns(full, depth)[0]
    return ranks, peak
