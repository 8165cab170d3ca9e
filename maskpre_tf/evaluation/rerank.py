"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li; CVPR 2017) from sparse neighbourhoods.

Follows the authors' released ``re_ranking`` (the function torchreid and fast-reid ship) step by
step, with the ``"zhong"`` neighbourhood convention of :mod:`maskpre_tf.kreciprocal`:

1. Working distance over all ``N = Nq + Ng`` images: with ``D = [[q_q, q_g], [q_g^T, g_g]]``,
   ``d(i, j) = D(j, i)^2 / max_k D(k, i)^2``: row ``i`` of ``d`` is column ``i`` of ``D``, squared
   and divided by its maximum (a zero maximum is replaced by 1). The authors feed Euclidean
   distances; torchreid and fast-reid pass squared-Euclidean or cosine distances (``d`` is then
   their square), and so does :func:`~maskpre_tf.evaluation.extract.evaluate_features` (cosine).
2. Neighbour lists: the ``max(k1 + 1, k2)`` nearest images of every image by ``d`` (ties: lower
   index first) and each row's maximum, from one pass over tiles of ``D``
   (:func:`~maskpre_tf.evaluation.working_distance.nearest_neighbours`).
3. k-reciprocal sets, expansion, encoding ``exp(-d)`` and local query expansion (``k2``).
4. Jaccard distance of query rows against gallery rows; ``final = (1 - λ) J + λ d``.

Nothing of size ``N^2`` or ``Nq x Ng`` is held: a query-gallery pair whose encodings share no
column has ``J = 1`` exactly, hence ``final = (1 - λ) + λ d(q, g)``. Each block of queries is
written that way from a fresh block of ``d``, then the few pairs that overlap are set from the
inverted index. :func:`re_ranked_blocks` yields those blocks (for
:func:`~maskpre_tf.evaluation.ranking.evaluate_rank_blocks`); :func:`re_ranking` stacks them into
the ``[Nq, Ng]`` matrix torchreid's function returns. Memory: the inputs, neighbour lists and
encodings of ``O(N (k1 + k2))`` entries, and a few blocks of :data:`BLOCK_ELEMENTS` floats.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from maskpre_tf import kreciprocal
from maskpre_tf.errors import UserError
from maskpre_tf.evaluation.distance import check_no_nan, prepare, row_chunks
from maskpre_tf.evaluation.working_distance import (
    FeatureDistances,
    MatrixDistances,
    Source,
    nearest_neighbours,
    working_block,
    working_pairs,
)

#: Elements of one block of final distances (float32) produced at a time.
BLOCK_ELEMENTS = 1 << 22


def _reranked(
    src: Source, k1: int, k2: int, lambda_value: float, max_triples: int
) -> Iterator[np.ndarray]:
    """Steps 2-4, one ``[rows, Ng]`` float32 block of final distances per block of queries."""
    nq, ng = src.num_query, src.num_gallery
    depth = min(nq + ng, kreciprocal.list_depth(k1, k2, "zhong"))
    ranks, peak = nearest_neighbours(src, depth)

    def pair_distance(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return working_pairs(src, peak, rows, cols)

    v = kreciprocal.k_reciprocal_encoding(ranks, pair_distance, k1, k2, "zhong", max_triples)
    del ranks
    v_query = v[:nq]
    gallery_index = kreciprocal.column_index(v[nq:])
    del v
    lam = np.float32(lambda_value)
    keep = np.float32(1.0) - lam
    for start, stop in row_chunks(nq, ng, BLOCK_ELEMENTS):
        d = working_block(src, peak, (start, stop), (nq, nq + ng))
        d *= lam
        final = np.full(d.shape, keep, dtype=np.float32)  # J = 1: no overlap
        for rows, cols, jac in kreciprocal.jaccard_blocks(
            v_query[start:stop], gallery_index, max_triples=max_triples
        ):
            final[rows, cols] = jac * keep
        final += d
        yield final


def _check_arguments(num_q: int, num_g: int, k1: int, k2: int, lambda_value: float) -> None:
    if int(k1) < 1 or int(k2) < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if num_q == 0 or num_g == 0:
        raise UserError(
            f"re-ranking needs non-empty query and gallery sets, got {num_q} and {num_g}; "
            "check the query and gallery directories of the dataset."
        )


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_triples: int = kreciprocal.DEFAULT_MAX_TRIPLES,
) -> np.ndarray:
    """k-reciprocal re-ranking of given distance matrices, as torchreid's ``re_ranking``.

    Steps and conventions in the module docstring. Results equal torchreid's up to float32
    rounding, except where distances tie (lower index first here; an unstable sort there). k1,
    k2 larger than ``N - 1`` use all ``N`` images.

    Args:
      q_g_dist: [Nq, Ng] query-gallery distances (>= 0).
      q_q_dist: [Nq, Nq] query-query distances.
      g_g_dist: [Ng, Ng] gallery-gallery distances.
      k1: size of the k-reciprocal neighbourhood (>= 1).
      k2: size of the local query expansion (>= 1).
      lambda_value: weight of the original distance, in [0, 1].
      max_triples: temporary-memory cap of the sparse steps.

    Returns:
      float32 [Nq, Ng] re-ranked distances.
    """
    qg = np.asarray(q_g_dist, dtype=np.float32)
    qq = np.asarray(q_q_dist, dtype=np.float32)
    gg = np.asarray(g_g_dist, dtype=np.float32)
    if qg.ndim != 2:
        raise ValueError(f"q_g_dist must be 2-D [Nq, Ng], got shape {qg.shape}")
    num_q, num_g = qg.shape
    if qq.shape != (num_q, num_q) or gg.shape != (num_g, num_g):
        raise ValueError(
            f"expected q_q_dist [{num_q}, {num_q}] and g_g_dist [{num_g}, {num_g}] to go with "
            f"q_g_dist {qg.shape}, got {qq.shape} and {gg.shape}"
        )
    _check_arguments(num_q, num_g, k1, k2, lambda_value)
    for name, block in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        check_no_nan(block, name)
    out = np.empty((num_q, num_g), dtype=np.float32)
    start = 0
    for block in _reranked(
        MatrixDistances(qg, qq, gg), int(k1), int(k2), lambda_value, max_triples
    ):
        out[start : start + len(block)] = block
        start += len(block)
    return out


def re_ranked_blocks(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
    max_triples: int = kreciprocal.DEFAULT_MAX_TRIPLES,
) -> Iterator[np.ndarray]:
    """Re-ranked distances of embeddings, one block of consecutive query rows at a time.

    The same result as :func:`re_ranking` of the :func:`~maskpre_tf.evaluation.distance.
    pairwise_distance` matrices (``metric``), without building them: the neighbour search
    multiplies blocks of rows by all embeddings, so it costs ``O(N^2 D)`` arithmetic but only
    ``O(N (k1 + k2) + BLOCK_ELEMENTS)`` memory beyond the features.

    Args:
      query_features: [Nq, D] real embeddings.
      gallery_features: [Ng, D] real embeddings.
      k1, k2, lambda_value, max_triples: as in :func:`re_ranking`.
      metric: ``"cosine"`` or ``"euclidean"`` (see :mod:`maskpre_tf.evaluation.distance`).

    Returns:
      An iterator of float32 ``[rows, Ng]`` blocks of re-ranked distances, in query order. The
      arguments are checked by this call; the work runs as the iterator advances.
    """
    qx = np.asarray(query_features, dtype=np.float32)
    gx = np.asarray(gallery_features, dtype=np.float32)
    _check_arguments(len(qx), len(gx), k1, k2, lambda_value)
    for name, x in (("query_features", qx), ("gallery_features", gx)):
        if not np.isfinite(x).all():
            raise UserError(
                f"{name} contain NaN or inf values; the embeddings are probably broken (a "
                "diverged checkpoint or a corrupt feature file): re-extract them from a working "
                "checkpoint."
            )
    q, g = prepare(qx, metric), prepare(gx, metric)
    if q.x.shape[1] != g.x.shape[1]:
        raise ValueError(f"features must be [Nq, D] and [Ng, D], got {q.x.shape} and {g.x.shape}")
    return _reranked(FeatureDistances(q, g), int(k1), int(k2), lambda_value, max_triples)
