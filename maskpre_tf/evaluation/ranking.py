"""The Market-1501 ranking protocol: CMC and mAP of a query x gallery distance matrix.

:func:`evaluate_rank` scores a distance matrix as defined by the evaluation code of Zheng et al.
(ICCV 2015) and reproduced by torchreid's and fast-reid's ``eval_market1501``;
:func:`evaluate_rank_blocks` scores the same matrix handed over as consecutive blocks of query
rows, so that a matrix too large to hold (MSMT17: 11,659 x 82,161) never needs to exist.
Distances come from :mod:`maskpre_tf.evaluation.distance`, re-ranked distances from
:mod:`maskpre_tf.evaluation.rerank`.

Everything is NumPy on the CPU and works through chunks of query rows (a few tens of MB of
scratch for a Market-1501 test set of 3,368 x 15,913).

Tie rule: among gallery items at exactly the same distance from a query the one with the lower
gallery index ranks first (what a stable sort of each row gives).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.distance import check_no_nan, row_chunks

__all__ = ["evaluate_rank", "evaluate_rank_blocks"]

# Scratch budget: elements of one [rows, num_gallery] block processed at a time.
_CHUNK_ELEMENTS = 1 << 21


def _as_ids(values: object, length: int, name: str) -> np.ndarray:
    """Validate a 1-D integer label vector of the given length; return it as int64."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"{name} must be a 1-D array of length {length}, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _gallery_groups(g_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gallery indices grouped by identity.

    Args:
      g_pids: int64 [Ng] gallery identities.

    Returns:
      ``(pids, starts, members)``: the sorted distinct identities [P], where each one's group
      starts in ``members`` [P + 1], and the gallery indices [Ng] ordered by identity, then
      by index.
    """
    members = np.argsort(g_pids, kind="stable")
    pids, starts = np.unique(g_pids[members], return_index=True)
    return pids, np.append(starts, g_pids.size), members


def _same_identity(
    q_pids: np.ndarray, groups: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of all (query, gallery) pairs that share an identity.

    Args:
      q_pids: int64 [c] identities of a chunk of queries.
      groups: output of :func:`_gallery_groups`.

    Returns:
      int64 ``(rows, cols)`` [M]: query row in the chunk (ascending) and gallery index
      (ascending within a row).
    """
    pids, starts, members = groups
    slot = np.minimum(np.searchsorted(pids, q_pids), pids.size - 1)
    found = pids[slot] == q_pids
    first = starts[slot]
    count = np.where(found, starts[slot + 1] - first, 0)
    rows = np.repeat(np.arange(q_pids.size, dtype=np.int64), count)
    offset = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
    return rows, members[first[rows] + offset]


def _search_rows(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Vectorised binary search: ``#(sorted_rows[rows[i]] < values[i])`` for every ``i``.

    Args:
      sorted_rows: [c, Ng] block with every row sorted ascending.
      rows: int64 [M] row of each value.
      values: [M] values to place, same dtype as the block.

    Returns:
      int64 [M] left insertion points in 0..Ng.
    """
    num_g = sorted_rows.shape[1]
    flat = sorted_rows.ravel()
    base = rows * num_g
    lo = np.zeros(rows.size, dtype=np.int64)
    hi = np.full(rows.size, num_g, dtype=np.int64)
    for _ in range(num_g.bit_length()):  # each step halves every open interval [lo, hi)
        mid = (lo + hi) >> 1
        open_ = mid < hi
        below = (flat[base + np.minimum(mid, num_g - 1)] < values) & open_
        lo = np.where(below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)
    return lo


def _ties_before(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``#(block[rows[i], :cols[i]] == block[rows[i], cols[i]])``: equal items ranked earlier.

    Args:
      block: [c, Ng] distances.
      rows, cols: int64 [T] coordinates of items whose distance occurs more than once in
        their row.

    Returns:
      int64 [T] counts.
    """
    num_g = block.shape[1]
    out = np.empty(rows.size, dtype=np.int64)
    heavy = rows.size > 8 * np.unique(rows).size
    if heavy:  # many ties per row (e.g. constant distances): one stable argsort per row
        tied_rows, local = np.unique(rows, return_inverse=True)
        sub = block[tied_rows]
        order = np.argsort(sub, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(num_g, dtype=order.dtype)[None, :], axis=1)
        sorted_sub = np.take_along_axis(sub, order, axis=1)
        left = _search_rows(sorted_sub, local, sub[local, cols])
        return rank[local, cols] - left
    step = max(1, _CHUNK_ELEMENTS // num_g)
    index = np.arange(num_g)
    for start in range(0, rows.size, step):
        r, c = rows[start : start + step], cols[start : start + step]
        equal = block[r] == block[r, c][:, None]
        equal &= index[None, :] < c[:, None]
        out[start : start + step] = np.count_nonzero(equal, axis=1)
    return out


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """CMC curve and mAP under the Market-1501 protocol.

    The protocol of Zheng et al. (ICCV 2015) as torchreid and fast-reid implement it in
    ``eval_market1501``: for each query, gallery items with the query's identity *and* camera
    are removed from its ranked list; a query whose remaining list holds no item of its
    identity is skipped; distractors (pid 0) and any other identity are simply non-matches
    (junk images, pid -1, are expected to be dropped when the split is read).

    * CMC is first-match: ``cmc[k]`` is the fraction of evaluated queries whose first correct
      match sits at rank ``<= k + 1`` of the filtered list.
    * AP is non-interpolated: the mean, over the query's correct matches, of the precision at
      the rank of each match (over the whole filtered list, not only the first ``max_rank``).
    * Ties: items at equal distance are ordered by gallery index (a stable sort; -0.0 equals
      0.0). The libraries use NumPy's default quicksort, whose tie order is unspecified;
      without ties the results are identical.
    * Small galleries: like the libraries, when ``num_gallery < max_rank`` the curve is
      shortened to ``num_gallery`` entries. Where a query's filtered list is shorter than the
      curve, its entries past the list's end count as matched (its first match lies within
      the list); the libraries' Python code fails on such ragged lists there and their Cython
      code counts them as misses.

    Computation runs over chunks of query rows: each row is sorted by value and the rank of
    each same-identity item is found by a vectorised binary search (plus a count of equal
    values at lower gallery index where distances tie). There is no loop over queries or
    gallery items.

    Args:
      distmat: [num_query, num_gallery] distances, smaller = more similar; float32 (fastest),
        float64 or integer.
      q_pids, g_pids: int [num_query], [num_gallery] identities.
      q_camids, g_camids: int [num_query], [num_gallery] camera ids.
      max_rank: length of the CMC curve (>= 1).

    Returns:
      ``(cmc, mAP)``: cmc float32 [min(max_rank, num_gallery)] in [0, 1], non-decreasing;
      mAP a Python float in [0, 1].

    Raises:
      UserError: empty query or gallery set, NaN distances, or no query with a valid match.
      ValueError: inconsistent shapes or arguments.
    """
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {dist.shape}")
    num_q, num_g = dist.shape
    ids = _check_inputs(num_q, num_g, max_rank, q_pids, g_pids, q_camids, g_camids)
    chunks = row_chunks(num_q, num_g, _CHUNK_ELEMENTS)
    return _evaluate((dist[start:stop] for start, stop in chunks), *ids, max_rank)


def evaluate_rank_blocks(
    blocks: Iterable[np.ndarray],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """:func:`evaluate_rank` of a distance matrix given as consecutive blocks of query rows.

    Args:
      blocks: ``[rows, num_gallery]`` distance blocks, in query order, together covering every
        query exactly once (e.g. :func:`~maskpre_tf.evaluation.rerank.re_ranked_blocks`).
        Blocks of a few million elements keep the scratch memory small.
      q_pids, g_pids, q_camids, g_camids, max_rank: as in :func:`evaluate_rank`; their lengths
        give ``num_query`` and ``num_gallery``.

    Returns:
      ``(cmc, mAP)`` exactly as :func:`evaluate_rank` returns for the stacked matrix.
    """
    num_q, num_g = len(q_pids), len(g_pids)
    ids = _check_inputs(num_q, num_g, max_rank, q_pids, g_pids, q_camids, g_camids)
    return _evaluate(blocks, *ids, max_rank)


def _check_inputs(
    num_q: int,
    num_g: int,
    max_rank: int,
    q_pids: object,
    g_pids: object,
    q_camids: object,
    g_camids: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the sizes and ids; return ``(q_pids, g_pids, q_camids, g_camids)`` as int64."""
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_q == 0 or num_g == 0:
        raise UserError(
            f"the evaluation has {num_q} query and {num_g} gallery images; expected both "
            "splits to be non-empty. Check the query and gallery directories of the dataset."
        )
    return (
        _as_ids(q_pids, num_q, "q_pids"),
        _as_ids(g_pids, num_g, "g_pids"),
        _as_ids(q_camids, num_q, "q_camids"),
        _as_ids(g_camids, num_g, "g_camids"),
    )


def _evaluate(
    blocks: Iterable[np.ndarray],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
) -> tuple[np.ndarray, float]:
    """CMC and mAP accumulated over consecutive blocks of query rows (inputs validated)."""
    num_q, num_g = q_pids.size, g_pids.size
    groups = _gallery_groups(g_pids)
    first_hits = np.zeros(num_g, dtype=np.int64)  # histogram of first-match ranks
    ap_sum = 0.0
    num_valid = 0
    start = 0
    for block in blocks:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != num_g or start + block.shape[0] > num_q:
            raise ValueError(
                f"distance block of shape {block.shape} at query row {start} does not fit "
                f"[{num_q}, {num_g}]"
            )
        if block.dtype == np.float16:
            block = block.astype(np.float32)
        elif block.dtype.kind not in "fiu":
            block = block.astype(np.float64)
        stop = start + block.shape[0]
        block_ap, block_valid = _score_block(
            block, q_pids[start:stop], q_camids[start:stop], groups, g_camids, first_hits
        )
        ap_sum += block_ap
        num_valid += block_valid
        start = stop
    if start != num_q:
        raise ValueError(f"the distance blocks cover {start} query rows, expected {num_q}")
    if num_valid == 0:
        raise UserError(
            "no query has a valid gallery match: every query identity is missing from the "
            "gallery or appears there only under the query's own camera. Check that query and "
            "gallery come from the same dataset and that identities and camera ids were parsed "
            "from the file names correctly."
        )
    cmc = (np.cumsum(first_hits)[: min(int(max_rank), num_g)] / num_valid).astype(np.float32)
    return cmc, ap_sum / num_valid


def _score_block(
    block: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    groups: tuple[np.ndarray, np.ndarray, np.ndarray],
    g_camids: np.ndarray,
    first_hits: np.ndarray,
) -> tuple[float, int]:
    """Score one block of query rows.

    Args:
      block: ``[c, Ng]`` distances of ``c`` consecutive queries.
      q_pids, q_camids: int64 ``[c]`` their identities and cameras.
      groups: :func:`_gallery_groups` of the gallery identities.
      g_camids: int64 ``[Ng]`` gallery cameras.
      first_hits: int64 ``[Ng]`` histogram of first-match ranks, updated in place.

    Returns:
      ``(sum of the block's APs, number of its queries with a valid match)``.
    """
    num_g = block.shape[1]
    ordered = np.sort(block, axis=1)  # NaN sorts last
    if ordered.dtype.kind == "f" and np.isnan(ordered[:, -1]).any():
        check_no_nan(block, "distmat")
    rows, cols = _same_identity(q_pids, groups)
    if rows.size == 0:
        return 0.0, 0
    # 0-based rank of every same-identity item in its query's full ranked list.
    values = block[rows, cols]
    ranks = _search_rows(ordered, rows, values)
    nxt = np.minimum(ranks + 1, num_g - 1)
    tied = (ranks + 1 < num_g) & (ordered[rows, nxt] == values)
    del ordered
    if tied.any():
        ranks[tied] += _ties_before(block, rows[tied], cols[tied])
    # Order the same-identity items of each query by rank.
    order = np.argsort(rows * num_g + ranks, kind="stable")
    rows, cols, ranks = rows[order], cols[order], ranks[order]
    junk = g_camids[cols] == q_camids[rows]
    # Junk items ranked before each item in the same query: exclusive cumsum per row.
    ex_junk = np.cumsum(junk) - junk
    junk_before = ex_junk - ex_junk[np.searchsorted(rows, rows)]
    good = ~junk
    g_rows = rows[good]
    if g_rows.size == 0:
        return 0.0, 0
    valid_rank = ranks[good] - junk_before[good]  # 0-based rank in the filtered list
    g_first = np.searchsorted(g_rows, g_rows)
    hit_no = np.arange(g_rows.size) - g_first + 1  # 1-based count of hits so far
    precision = hit_no / (valid_rank + 1.0)
    n_good = np.bincount(g_rows, minlength=block.shape[0])
    prec_sum = np.bincount(g_rows, weights=precision, minlength=block.shape[0])
    has = n_good > 0
    starts = np.flatnonzero(g_first == np.arange(g_rows.size))
    first_hits += np.bincount(valid_rank[starts], minlength=num_g)
    return float(np.sum(prec_sum[has] / n_good[has])), int(has.sum())
