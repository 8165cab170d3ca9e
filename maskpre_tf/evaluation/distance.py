"""Distances between embeddings: query x gallery matrices, blocks of rows, or single pairs.

Metrics (:data:`METRICS`), computed in float32 with BLAS matrix products:

* ``"cosine"``: ``1 - <a/|a|, b/|b|>`` in ``[0, 2]`` (a zero vector is at distance 1 from
  everything);
* ``"euclidean"``: squared L2 distance ``|a - b|^2`` (the units of the features, squared),
  clipped at 0 against rounding.

:class:`Embeddings` holds features prepared once for a metric, so that blocks of rows
(:func:`block_distances`) and scattered pairs (:func:`pair_distances`) can be computed without
ever holding a whole ``[Nq, Ng]`` matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from maskpre_tf.errors import UserError
from maskpre_tf.kreciprocal import pair_dots

METRICS = ("cosine", "euclidean")

# Scratch budget: elements of one [rows, num_gallery] block processed at a time.
_CHUNK_ELEMENTS = 1 << 21


def row_chunks(num_rows: int, num_cols: int, budget: int) -> list[tuple[int, int]]:
    """Split ``range(num_rows)`` into ``(start, stop)`` chunks of about ``budget`` elements."""
    rows = max(1, budget // max(1, num_cols))
    return [(s, min(num_rows, s + rows)) for s in range(0, num_rows, rows)]


def check_no_nan(block: np.ndarray, name: str) -> None:
    """Raise :class:`UserError` if a distance block contains NaN."""
    if np.isnan(block).any():
        raise UserError(
            f"{name} contains NaN distances; expected finite distances. The embeddings are "
            "probably NaN (a diverged checkpoint or a corrupt feature file): re-extract the "
            "features from a working checkpoint."
        )


@dataclass(frozen=True)
class Embeddings:
    """Features prepared for one metric.

    Attributes:
      x: ``[N, D]`` float32 rows (L2-normalised for ``"cosine"``).
      sq: ``[N]`` float32 squared norms for ``"euclidean"``, else None.
      metric: one of :data:`METRICS`.
    """

    x: np.ndarray
    sq: np.ndarray | None
    metric: str

    def __len__(self) -> int:
        return self.x.shape[0]

    def rows(self, start: int, stop: int) -> Embeddings:
        """The rows ``start:stop`` (views, no copy)."""
        sq = None if self.sq is None else self.sq[start:stop]
        return Embeddings(self.x[start:stop], sq, self.metric)


def prepare(features: np.ndarray, metric: str = "cosine") -> Embeddings:
    """Prepare ``[N, D]`` real features for ``metric`` (a normalised float32 copy for cosine)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D [N, D], got shape {x.shape}")
    if metric not in METRICS:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return Embeddings(x / np.maximum(norms, np.float32(1e-12)), None, metric)
    return Embeddings(x, np.einsum("ij,ij->i", x, x), metric)


def _finish(dots: np.ndarray, a_sq: np.ndarray | None, b_sq: np.ndarray | None) -> None:
    """Turn inner products into distances in place (cosine if no squared norms are given)."""
    if a_sq is None:
        np.subtract(np.float32(1.0), dots, out=dots)
        np.clip(dots, 0.0, 2.0, out=dots)
    else:
        dots *= np.float32(-2.0)
        dots += a_sq
        dots += b_sq
        np.maximum(dots, 0.0, out=dots)


def block_distances(a: Embeddings, b: Embeddings, out: np.ndarray | None = None) -> np.ndarray:
    """All distances between the rows of ``a`` and of ``b``: float32 ``[len(a), len(b)]``.

    ``out`` (float32 ``[len(a), len(b)]``, may be a view) receives the result when given.
    """
    out = np.matmul(a.x, b.x.T, out=out)
    _finish(out, None if a.sq is None else a.sq[:, None], None if b.sq is None else b.sq[None, :])
    return out


def pair_distances(a: Embeddings, b: Embeddings, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Distances ``d(a[rows[p]], b[cols[p]])`` of single pairs: float32 ``[P]``."""
    out = pair_dots(a.x, b.x, rows, cols)
    _finish(out, None if a.sq is None else a.sq[rows], None if b.sq is None else b.sq[cols])
    return out


def _prepared_pair(qf: np.ndarray, gf: np.ndarray, metric: str) -> tuple[Embeddings, Embeddings]:
    q, g = prepare(qf, metric), prepare(gf, metric)
    if q.x.shape[1] != g.x.shape[1]:
        raise ValueError(f"features must be [Nq, D] and [Ng, D], got {q.x.shape} and {g.x.shape}")
    return q, g


def distance_blocks(qf: np.ndarray, gf: np.ndarray, metric: str = "cosine") -> Iterator[np.ndarray]:
    """:func:`pairwise_distance` one block of consecutive query rows at a time.

    Yields:
      float32 ``[rows, Ng]`` blocks of about ``_CHUNK_ELEMENTS`` elements, in query order.
    """
    q, g = _prepared_pair(qf, gf, metric)
    for start, stop in row_chunks(len(q), len(g), _CHUNK_ELEMENTS):
        yield block_distances(q.rows(start, stop), g)


def pairwise_distance(qf: np.ndarray, gf: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Distances between every query and every gallery embedding.

    Args:
      qf: query features, [Nq, D], any real dtype (computed in float32).
      gf: gallery features, [Ng, D].
      metric: ``"cosine"`` or ``"euclidean"`` (see the module docstring).

    Returns:
      float32 [Nq, Ng] distance matrix, computed in blocks of query rows.
    """
    q, g = _prepared_pair(qf, gf, metric)
    out = np.empty((len(q), len(g)), dtype=np.float32)
    for start, stop in row_chunks(len(q), len(g), _CHUNK_ELEMENTS):
        block_distances(q.rows(start, stop), g, out=out[start:stop])
    return out
